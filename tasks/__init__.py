"""lm-eval task YAML of spiking-lm (installed as ``spiking_lm_plugin.tasks``); `spiking-lm tasks-dir` prints its path."""
