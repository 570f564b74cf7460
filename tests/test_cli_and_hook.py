"""The `spiking-lm` command and the lm-eval import hook, as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)


def test_help_explains_subcommands():
    proc = run(BIN / "spiking-lm", "--help")
    assert proc.returncode == 0
    for sub in ("convert", "demo", "tasks-dir", "fetch", "info"):
        assert sub in proc.stdout
    proc = run(BIN / "spiking-lm", "convert", "--help")
    assert "--timesteps" in proc.stdout and "--allocation" in proc.stdout and "--alternating" in proc.stdout
    proc = run(BIN / "spiking-lm", "convert", "--model", "x", "--out", "y", "--joint", "--alternating")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_convert_command_writes_a_checkpoint(tmp_path, tiny_model_dir):
    out = tmp_path / "ckpt"
    proc = run(BIN / "spiking-lm", "convert", "--model", tiny_model_dir, "--out", out, "-T", "6", "--grains", "3",
               "--calibration-tokens", "1024", "--sequence-length", "128", "--samples-per-site", "2048",
               "--rounds", "1", "--threshold-steps", "4", "--base-steps", "2", "--prefix", "5,7",
               "--tau-headroom", "1.25", "--keep-outlier-tokens", "--alternating", "--weight-bits", "8",
               "--weight-group-size", "32", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rel. MSE" in proc.stderr + proc.stdout and "q" in proc.stderr + proc.stdout
    meta = json.loads((out / "spiking_config.json").read_text())
    assert meta["config"]["timesteps"] == 6 and meta["neuron"]["allocation"] == [2, 2, 2]
    assert meta["config"]["tau_headroom"] == 1.25 and meta["config"]["exclude_outlier_tokens"] is False
    assert meta["config"]["fit"]["joint"] is False and meta["config"]["fit"]["threshold_steps"] == 4
    assert meta["fit"]["load_s"] > 0 and meta["fit"]["calibrate_s"] > 0 and meta["fit"]["fit_s"] > 0
    info = run(BIN / "spiking-lm", "info", out)
    assert info.returncode == 0 and json.loads(info.stdout)["sites"] == 21
    assert meta["prefix"]["tokens"] == [5, 7] and json.loads(info.stdout)["prefix"]["tokens"] == [5, 7]
    assert meta["config"]["weight_bits"] == 8 and meta["weights"]["group_size"] == 32
    assert json.loads(info.stdout)["weights"]["library"] == "torchao"


@pytest.mark.parametrize("args, message", [
    (["-T", "0"], "argument --timesteps/-T: must be >= 1, got 0"),
    (["--grains", "2", "--allocation", "2,2,4"], "has 3 grains but grains=2"),
    (["-T", "2", "--grains", "3"], "more grains (3) than time steps"),
    (["--allocation", "2,2"], "sums to 4, not T=8"),
    (["--prefix", "x,y"], "--prefix must be 'auto', 'none' or comma-separated token ids"),
    (["--tau-headroom", "lots"], "--tau-headroom must be 'auto' or a number >= 1"),
    (["--tau-headroom", "0.5"], "tau_headroom must be 'auto' or a number >= 1"),
    (["--weight-bits", "3"], "argument --weight-bits: invalid choice: 3"),
    (["--weight-bits", "4", "--weight-group-size", "0"], "--weight-group-size must be >= 1"),
    (["--weight-group-size", "32"], "weight_group_size needs weight_bits 8 or 4"),
])
def test_convert_rejects_bad_input_cleanly(tmp_path, args, message):
    proc = run(BIN / "spiking-lm", "convert", "--model", tmp_path / "missing", "--out", tmp_path / "o", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_convert_reports_a_missing_model(tmp_path):
    proc = run(BIN / "spiking-lm", "convert", "--model", tmp_path / "nowhere", "--out", tmp_path / "o",
               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "could not load model" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_tasks_dir_holds_the_packaged_tasks():
    proc = run(BIN / "spiking-lm", "tasks-dir")
    path = Path(proc.stdout.strip())
    assert (path / "spiking_enwiki_ppl.yaml").is_file() and (path / "energy_metrics.py").is_file()


@pytest.mark.smoke
def test_import_hook_is_cheap_and_registers_spiking_hf():
    # interpreter start: the .pth runs the hook, which imports neither torch nor lm_eval
    proc = run(sys.executable, "-c", "import sys; print('spiking_lm_lmeval_hook' in sys.modules, "
               "'torch' in sys.modules, 'lm_eval' in sys.modules)")
    assert proc.stdout.split() == ["True", "False", "False"]
    proc = run(sys.executable, "-c", "from lm_eval.api.registry import get_model; "
               "print(get_model('spiking-hf').__name__, get_model('hf').__name__)")
    assert proc.stdout.split() == ["SpikingHFLM", "HFLM"], proc.stderr[-2000:]


def test_import_hook_is_harmless_without_lm_eval():
    proc = run(sys.executable, "-c", "import sys; sys.modules['lm_eval'] = None; "
               "import spiking_lm_lmeval_hook as h; h.register(); print('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok"


def test_regular_install_ships_the_hook_tasks_and_configs(tmp_path):
    """`pip install .` (not editable): the .pth lands at the site root, tasks/ and configs/ as package data."""
    repo = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    proc = run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
               "--target", target, repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (target / "spiking_lm_lmeval.pth").read_text().strip() == "import spiking_lm_lmeval_hook"
    assert (target / "spiking_lm_plugin" / "tasks" / "spiking_enwiki_ppl.yaml").is_file()
    assert (target / "spiking_lm_plugin" / "configs" / "smollm2_t8_g2.yaml").is_file()
    # a site directory processes the .pth: the hook is imported (and lm-eval is not)
    check = run(sys.executable, "-S", "-c", f"import site, sys; site.addsitedir({str(target)!r}); "
                "print('spiking_lm_lmeval_hook' in sys.modules, 'lm_eval' in sys.modules)", cwd=tmp_path)
    assert check.stdout.split() == ["True", "False"], check.stderr


@pytest.mark.smoke
def test_lm_eval_entry_point_is_declared():
    """Harnesses with entry-point plugin discovery find ``spiking-hf`` without the .pth hook."""
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group="lm_eval.models")}
    assert found.get("spiking-hf") == "spiking_lm_plugin.lm_eval_model:SpikingHFLM", found


def test_benchmark_scripts_compile():
    """bench/ is not imported by any test; a syntax error there would otherwise surface only in a rerun."""
    scripts = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py"))
    assert len(scripts) >= 10
    for script in scripts:
        compile(script.read_text(), str(script), "exec")      # raises SyntaxError
