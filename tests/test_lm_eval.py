"""The real `lm_eval` CLI in a subprocess with the `spiking-hf` model, plus in-process metric checks."""

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spiking_lm_plugin.tasks_location import tasks_dir

pytestmark = pytest.mark.slow     # the lm_eval / real-model / subprocess tier

LM_EVAL = str(Path(sys.executable).with_name("lm_eval"))


def lm_eval(tmp_path, model: str, model_args: str, tasks: str, limit: int = 2) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / f"out-{abs(hash((model, model_args, tasks)))}"
    cmd = [LM_EVAL, "--model", model, "--model_args", model_args, "--device", "cpu", "--tasks", tasks,
           "--include_path", str(tasks_dir()), "--limit", str(limit), "--output_path", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        return {}, proc
    files = glob.glob(str(out / "**" / "results_*.json"), recursive=True)
    assert files, proc.stderr[-2000:]
    return json.loads(Path(files[0]).read_text()), proc


@pytest.fixture(scope="module")
def spiking_run(tmp_path_factory, tiny_model_dir, tiny_checkpoint):
    tmp = tmp_path_factory.mktemp("lm-eval")
    results, proc = lm_eval(tmp, "spiking-hf", f"pretrained={tiny_model_dir},spiking={tiny_checkpoint}",
                            "spiking_enwiki_ppl_short,spiking_enwiki_cloze")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results, proc


@pytest.mark.smoke
def test_cli_runs_perplexity_and_multiple_choice_with_energy(spiking_run):
    results, proc = spiking_run
    ppl = results["results"]["spiking_enwiki_ppl_short"]
    mc = results["results"]["spiking_enwiki_cloze"]
    assert ppl["word_perplexity,none"] > 1 and 0 <= mc["acc,none"] <= 1
    energy = results["config"]["spiking"]
    assert energy["mode"] == "fused" and energy["tokens"] > 0
    assert energy["ac"] > 0 and energy["mac"] > 0 and 0 < energy["firing_rate"] < 1
    assert energy["energy_j"] == pytest.approx((energy["mac"] * 4.6 + energy["ac"] * 0.9) * 1e-12 + energy["neuron_j"])
    assert energy["neuron_j"] == pytest.approx(energy["neuron_steps"] * 1.8e-12) and energy["neuron_j"] > 0
    assert energy["ann_mac"] > energy["mac"] and "saving_vs_ann" in energy
    assert ppl["energy_uj_per_token,none"] > 0 and ppl["ac_per_token,none"] > 0
    assert "spiking-hf energy" in proc.stderr + proc.stdout


def test_hf_and_spiking_none_give_identical_scores(tmp_path, tiny_model_dir):
    hf, p1 = lm_eval(tmp_path, "hf", f"pretrained={tiny_model_dir},dtype=float32", "spiking_enwiki_cloze", limit=3)
    ann, p2 = lm_eval(tmp_path, "spiking-hf", f"pretrained={tiny_model_dir},spiking=none", "spiking_enwiki_cloze",
                      limit=3)
    assert p1.returncode == 0 and p2.returncode == 0, (p1.stderr[-2000:], p2.stderr[-2000:])
    for metric in ("acc,none", "acc_norm,none"):
        assert hf["results"]["spiking_enwiki_cloze"][metric] == ann["results"]["spiking_enwiki_cloze"][metric]
    energy = ann["config"]["spiking"]
    assert energy["mode"] == "ann" and energy["ac"] == 0 and energy["mac"] == energy["ann_mac"] > 0


def test_fused_and_timestep_give_the_same_scores(tmp_path, tiny_model_dir, tiny_checkpoint, spiking_run):
    timestep, proc = lm_eval(tmp_path, "spiking-hf",
                             f"pretrained={tiny_model_dir},spiking={tiny_checkpoint},mode=timestep",
                             "spiking_enwiki_ppl_short,spiking_enwiki_cloze")
    assert proc.returncode == 0, proc.stderr[-3000:]
    fused = spiking_run[0]
    for task, metric in (("spiking_enwiki_ppl_short", "word_perplexity,none"),
                         ("spiking_enwiki_cloze", "acc,none")):
        assert timestep["results"][task][metric] == pytest.approx(fused["results"][task][metric], rel=1e-3)
    assert timestep["config"]["spiking"]["mode"] == "timestep"


def test_the_spike_mask_model_arg_evaluates_one_checkpoint_with_fewer_spikes(tmp_path, tiny_model_dir,
                                                                             tiny_checkpoint, spiking_run):
    masked, proc = lm_eval(tmp_path, "spiking-hf", f"pretrained={tiny_model_dir},spiking={tiny_checkpoint},spike_mask=2",
                           "spiking_enwiki_ppl_short,spiking_enwiki_cloze")
    assert proc.returncode == 0, proc.stderr[-3000:]
    energy, plain = masked["config"]["spiking"], spiking_run[0]["config"]["spiking"]
    assert energy["spike_mask"] == 2 and plain["spike_mask"] is None
    assert energy["tokens"] == plain["tokens"] and energy["ac"] < plain["ac"]
    assert energy["firing_rate"] < plain["firing_rate"]


def test_the_mass_correction_model_arg_switches_it_for_one_evaluation(tmp_path, tiny_model_dir, tiny_checkpoint,
                                                                      spiking_run):
    """The checkpoint's recipe has the mass correction on (the default); ``mass_correction=false`` evaluates the
    same neurons without it: another perplexity, its MACs gone from the energy report."""
    plain, proc = lm_eval(tmp_path, "spiking-hf",
                          f"pretrained={tiny_model_dir},spiking={tiny_checkpoint},mass_correction=false",
                          "spiking_enwiki_ppl_short,spiking_enwiki_cloze")
    assert proc.returncode == 0, proc.stderr[-3000:]
    off, on = plain["config"]["spiking"], spiking_run[0]["config"]["spiking"]
    assert on["mass_correction"] is True and off["mass_correction"] is False
    assert off["tokens"] == on["tokens"] and off["mac"] < on["mac"]
    metric = "word_perplexity,none"
    assert plain["results"]["spiking_enwiki_ppl_short"][metric] != \
        spiking_run[0]["results"]["spiking_enwiki_ppl_short"][metric]
    _, bad = lm_eval(tmp_path, "spiking-hf", f"pretrained={tiny_model_dir},spiking={tiny_checkpoint},"
                     "mass_correction=maybe", "spiking_enwiki_ppl_short")
    assert bad.returncode != 0 and "mass_correction must be true or false" in bad.stderr


@pytest.mark.parametrize("kind", ["missing", "not-a-checkpoint", "other-base", "truncated", "bad-mode"])
def test_bad_checkpoints_fail_with_one_clear_line(tmp_path, tiny_model_dir, tiny_checkpoint, kind):
    mode = "fused"
    if kind == "missing":
        ckpt, expected = tmp_path / "nope", "does not exist"
    elif kind == "not-a-checkpoint":
        ckpt, expected = tmp_path, "is not a spiking checkpoint"
    elif kind == "truncated":
        ckpt, expected = tmp_path / "cut", "is truncated"
        shutil.copytree(tiny_checkpoint, ckpt)
        data = (ckpt / "neurons.safetensors").read_bytes()
        (ckpt / "neurons.safetensors").write_bytes(data[: len(data) // 2])
    elif kind == "bad-mode":
        ckpt, expected, mode = tiny_checkpoint, "mode must be one of fused, timestep, analog, got 'bogus'", "bogus"
    else:   # same tokenizer and shapes, different weights
        from transformers import AutoTokenizer

        from .helpers import tiny_model

        other = tmp_path / "other"
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        tiny_model("llama", vocab_size=len(tokenizer), seed=99).save_pretrained(other)
        tokenizer.save_pretrained(other)
        ckpt, expected, tiny_model_dir = tiny_checkpoint, "was made for base model", other
    _, proc = lm_eval(tmp_path, "spiking-hf", f"pretrained={tiny_model_dir},spiking={ckpt},mode={mode}",
                      "spiking_enwiki_cloze")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1]
    assert last.startswith("spiking-hf: error: ") and expected in last, last


def test_energy_task_metrics_equal_the_meter(tiny_model_dir, tiny_checkpoint):
    """In-process: per-document energy metrics are the meter's counts for those documents, carried on each
    request's own result (nothing keyed by document text)."""
    import lm_eval as harness
    from lm_eval.tasks import TaskManager

    from spiking_lm_plugin.lm_eval_model import SpikingHFLM

    lm = SpikingHFLM(pretrained=str(tiny_model_dir), spiking=str(tiny_checkpoint), device="cpu")
    out = harness.simple_evaluate(model=lm, tasks=["spiking_enwiki_ppl_short"], limit=2, log_samples=True,
                                  task_manager=TaskManager(include_path=str(tasks_dir())))
    samples = out["samples"]["spiking_enwiki_ppl_short"]
    assert len(samples) == 2
    energies = [sample["filtered_resps"][0].energy for sample in samples]
    total_tokens = 0
    for sample, doc_energy in zip(samples, energies):
        assert sample["energy_uj_per_token"] == doc_energy["energy_uj_per_token"] > 0
        assert sample["ac_per_token"] == doc_energy["ac_per_token"]
        total_tokens += doc_energy["tokens"]
    meter = lm.meter.summary()
    assert meter["tokens"] == total_tokens
    weighted = sum(e["ac_per_token"] * e["tokens"] for e in energies)
    assert weighted == pytest.approx(meter["ac"], rel=1e-9)
