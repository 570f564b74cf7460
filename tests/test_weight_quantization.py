"""Weight-quantized spiking models (paper Table 8): torchao W8 / W4 under both executions, the checkpoint's
weight recipe re-applied on load and checked, bad recipes refused, lm_eval with ``weight_bits``."""

import json

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.checkpoint_files import CONFIG_FILE, CheckpointError
from spiking_lm_plugin.energy import EnergyMeter, cost_model
from spiking_lm_plugin.energy.events import LinearOp
from spiking_lm_plugin.weight_quantization import decoder_linears, dense_weight, is_quantized

from .helpers import random_windows, tiny_config, tiny_model

VOCAB = 256


def convert_tiny(bits: int, dtype=torch.float32, **overrides):
    model = tiny_model(vocab_size=VOCAB).to(dtype)
    state = slm.convert(model, tiny_config(weight_bits=bits, prefix="none", **overrides),
                        calibration=random_windows(VOCAB), base_model="tiny", show_progress=False)
    return model, state


def logits(model, mode: str = "fused") -> torch.Tensor:
    with torch.no_grad(), model.spiking.use(mode=mode):
        return model(random_windows(VOCAB, 2, 24, seed=7)).logits


@pytest.mark.smoke
@pytest.mark.parametrize("bits, levels", [(8, 256), (4, 16)])
def test_quantized_model_runs_both_executions_alike_in_float64(bits, levels):
    plain = tiny_model(vocab_size=VOCAB).double()
    slm.prepare(plain, tiny_config(rotation="none"))
    model, state = convert_tiny(bits, torch.float64, rotation="none")
    group = 32 if bits == 4 else 64                         # W4 default: groups of 32; W8: one scale per row
    for (name, linear), (_, original) in zip(decoder_linears(model), decoder_linears(plain)):
        w = dense_weight(linear)
        groups = w.reshape(-1, group)
        assert max(int(g.unique().numel()) for g in groups) <= levels, name
        error = w - original.weight
        if bits == 8:   # scales from the row maxima: no value moves by more than one step
            assert 0 < error.abs().max() <= groups.abs().amax() / (levels / 2 - 1), name
        else:           # HQQ's scales clip the largest values of a group a little, for a smaller error overall
            assert 0 < error.norm() / original.weight.norm() < 0.12, name
    assert state.weights["library"] == "torchao" and state.weights["bits"] == bits
    fused, timestep = logits(model, "fused"), logits(model, "timestep")
    assert (fused - timestep).abs().max() < 1e-10
    meter = EnergyMeter()
    with model.spiking.use(mode="fused", meter=meter):
        model(random_windows(VOCAB, 1, 16))
    linear_bits = {e.kind: e.weight_bits for e in meter.events.values() if isinstance(e, LinearOp)}
    assert linear_bits.pop("lm_head") is None and set(linear_bits.values()) == {bits}


@pytest.mark.smoke
@pytest.mark.parametrize("bits", [8, 4])
def test_checkpoint_round_trip_requantizes_to_the_same_logits(tmp_path, bits):
    model, state = convert_tiny(bits)
    assert all(is_quantized(lin.weight) for _, lin in decoder_linears(model))   # torchao's tensors, fp32
    slm.save(model, tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert meta["weights"]["fingerprint"] == state.weights["fingerprint"] and meta["config"]["weight_bits"] == bits
    fresh = tiny_model(vocab_size=VOCAB)
    slm.load(fresh, tmp_path / "ckpt")
    for mode in ("fused", "timestep", "analog"):
        assert torch.equal(logits(model, mode), logits(fresh, mode)), mode
    unquantized = tiny_model(vocab_size=VOCAB)
    slm.prepare(unquantized, tiny_config())
    assert not torch.allclose(logits(fresh, "ann"), logits(unquantized, "ann"))


def test_other_quantized_weights_are_refused_in_one_line(tmp_path):
    model, _ = convert_tiny(4)
    slm.save(model, tmp_path / "ckpt")
    # a base model already quantized to other weights (another recipe)
    other = tiny_model(vocab_size=VOCAB)
    slm.prepare(other, tiny_config(weight_bits=8))
    with pytest.raises(ValueError, match="already carries W8 per channel weights") as exc:
        slm.load(other, tmp_path / "ckpt")
    assert "\n" not in str(exc.value)
    # the same recipe quantizing to other values (another torchao version): the fingerprint tells
    config = tmp_path / "ckpt" / CONFIG_FILE
    meta = json.loads(config.read_text())
    meta["weights"].update(version="0.0.0-other", fingerprint="0" * 64)
    config.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"torchao 0\.0\.0-other .* install torchao==0\.0\.0-other") as exc:
        slm.load(tiny_model(vocab_size=VOCAB), tmp_path / "ckpt")
    assert "\n" not in str(exc.value)


def test_bad_weight_recipes_are_refused_before_any_work():
    for bits in (3, 32, True):
        with pytest.raises(ValueError, match="weight_bits must be one of 16, 8, 4"):
            slm.SpikingConfig(weight_bits=bits)
    with pytest.raises(ValueError, match="integer >= 1"):
        slm.SpikingConfig(weight_bits=4, weight_group_size=0)
    with pytest.raises(ValueError, match="needs weight_bits 8 or 4"):
        slm.SpikingConfig(weight_group_size=32)
    model = tiny_model(vocab_size=VOCAB)
    embeddings, norm = model.model.embed_tokens.weight.clone(), model.model.norm.weight.clone()
    with pytest.raises(ValueError, match="weight_group_size 48 does not divide the input width 64"):
        slm.convert(model, tiny_config(weight_bits=4, weight_group_size=48, rotation="full"),
                    calibration=random_windows(VOCAB), show_progress=False)
    # not even the rotation ran (it rotates the embeddings and folds the norms)
    assert torch.equal(model.model.embed_tokens.weight, embeddings) and torch.equal(model.model.norm.weight, norm)
    assert not any(is_quantized(lin.weight) for _, lin in decoder_linears(model))


def test_paper_read_write_reads_quantized_weights_at_their_width():
    paper = cost_model("paper")
    full = LinearOp("q_proj", 64, 32, False, 8, tokens=10.0, spikes=100.0)
    w4 = LinearOp("q_proj", 64, 32, False, 8, tokens=10.0, spikes=100.0, weight_bits=4)
    macs, outputs = 10 * 64 * 32, 10 * 32
    assert paper.cost(full).ann_rw_bits == 64 * macs + 32 * outputs
    assert paper.cost(w4).ann_rw_bits == (32 + 4) * macs + 32 * outputs
    assert paper.cost(w4).rw_bits == (4 + 1) * 100 * 32 and paper.cost(full).rw_bits == 33 * 100 * 32
    assert paper.cost(w4).mac == paper.cost(full).mac and paper.cost(w4).ac == paper.cost(full).ac


def test_spiking_hf_refuses_a_weight_recipe_other_than_the_checkpoints(tmp_path):
    from spiking_lm_plugin.lm_eval_model import _check_weight_bits, _weight_recipe

    model, _ = convert_tiny(4)
    slm.save(model, tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    _check_weight_bits(_weight_recipe("4", None), meta, "ckpt")
    _check_weight_bits(_weight_recipe("4", "32"), meta, "ckpt")
    with pytest.raises(ValueError, match="fitted on W4 group 32, not W8 per channel"):
        _check_weight_bits(_weight_recipe("8", None), meta, "ckpt")
    with pytest.raises(ValueError, match="weight_bits must be"):
        _weight_recipe("3", None)


@pytest.mark.slow
def test_lm_eval_runs_quantized_ann_and_spiking_models(tmp_path, tiny_model_dir, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    from .test_lm_eval import lm_eval

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    slm.convert(model, tiny_config(weight_bits=4, calibration_tokens=1024, sequence_length=128),
                tokenizer=smollm2_tokenizer, base_model=str(tiny_model_dir), show_progress=False)
    slm.save(model, tmp_path / "w4")
    spiking, p1 = lm_eval(tmp_path, "spiking-hf", f"pretrained={tiny_model_dir},spiking={tmp_path / 'w4'},"
                          "weight_bits=4,energy_convention=paper,read_write=true", "spiking_enwiki_ppl_short")
    ann, p2 = lm_eval(tmp_path, "spiking-hf", f"pretrained={tiny_model_dir},spiking=none,weight_bits=4",
                      "spiking_enwiki_ppl_short")
    plain, p3 = lm_eval(tmp_path, "spiking-hf", f"pretrained={tiny_model_dir},spiking=none",
                        "spiking_enwiki_ppl_short")
    assert p1.returncode == p2.returncode == p3.returncode == 0, (p1.stderr[-2000:], p2.stderr[-2000:])
    ppl = {name: r["results"]["spiking_enwiki_ppl_short"]["word_perplexity,none"]
           for name, r in (("spiking", spiking), ("ann", ann), ("plain", plain))}
    assert ppl["ann"] != ppl["plain"] and ppl["spiking"] > 1          # W4 changes the ANN's own output
    assert spiking["config"]["spiking"]["read_write_j"] > 0
    _, bad = lm_eval(tmp_path, "spiking-hf", f"pretrained={tiny_model_dir},spiking={tmp_path / 'w4'},weight_bits=8",
                     "spiking_enwiki_ppl_short")
    assert bad.returncode == 2 and "fitted on W4 group 32, not W8 per channel" in bad.stderr
    assert "Traceback" not in bad.stderr
