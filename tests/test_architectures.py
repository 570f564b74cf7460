"""Every supported decoder family as a tiny random model built from its transformers config class: the
conversion, fused == timestep (float64), KV-cache generation == full forward, rotation leaving the ANN
unchanged (or refused where norms cannot be folded), the checkpoint round trip, and two lm_eval runs."""

from __future__ import annotations

import pytest
import torch
import transformers

import spiking_lm_plugin as slm
from spiking_lm_plugin.hf_compat import output_cache, with_cache
from spiking_lm_plugin.model_surgery import apply_rotation, attach
from spiking_lm_plugin.sites import POST_NORM_ARCHITECTURES, SUPPORTED_ARCHITECTURES

from .helpers import random_windows, tiny_config

BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, vocab_size=256)

#: name -> (config class, model class, overrides)
FAMILIES = {
    "llama3-tied": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    "llama3-untied": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(pad_token_id=0)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", dict(pad_token_id=0)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        head_dim=16, query_pre_attn_scalar=16, attn_logit_softcapping=0.05, final_logit_softcapping=30.0,
        sliding_window=6, pad_token_id=0)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        head_dim=16, query_pre_attn_scalar=16, sliding_window=6, pad_token_id=0)),
}


def family_model(name: str, seed: int = 0, **extra):
    config_cls, model_cls, overrides = FAMILIES[name]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**{**BASE, **overrides, **extra})
    return getattr(transformers, model_cls)(config).eval()


def logits_in(model, ids, mode=None):
    if mode is not None:
        slm.set_mode(model, mode)
    with torch.no_grad():
        return model(ids).logits


def test_the_families_cover_every_supported_architecture():
    covered = {family_model(name).config.model_type for name in FAMILIES}
    assert covered | {"qwen2", "mistral"} == set(SUPPORTED_ARCHITECTURES)   # qwen2/mistral: tests/helpers.py


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_converts_and_both_executions_agree_in_float64(name, tmp_path):
    model = family_model(name)
    slm.convert(model, tiny_config(), calibration=random_windows(256), show_progress=False)
    ids = random_windows(256, n=2, length=12, seed=7)
    model.double()
    fused = logits_in(model, ids, "fused")
    ann = logits_in(model, ids, "ann")
    assert float((fused - ann).abs().max()) > 1e-6                     # the neurons do something
    torch.testing.assert_close(logits_in(model, ids, "timestep"), fused, rtol=1e-9, atol=1e-9)
    model.float()
    expected = logits_in(model, ids, "fused")
    slm.save(model, tmp_path / "ckpt")
    fresh = family_model(name)
    state = slm.load(fresh, tmp_path / "ckpt")
    assert len(state.site_names) == 2 * 10 + 1
    assert torch.equal(logits_in(fresh, ids, "fused"), expected)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_cached_generation_equals_the_full_forward(name):
    """Behind an explicit prefix, so the prefix KV injection is exercised for every family too."""
    model = family_model(name)
    slm.convert(model, tiny_config(prefix=[7, 11]), calibration=random_windows(256), show_progress=False)
    model.double()
    slm.set_mode(model, "fused")
    ids = random_windows(256, n=1, length=9, seed=4)
    with torch.no_grad():
        full = model(ids).logits
        cache = output_cache(model(ids[:, :-1], use_cache=True))
        step = model(ids[:, -1:], **with_cache({"use_cache": True}, cache)).logits[:, -1]
        torch.testing.assert_close(step, full[:, -1], rtol=1e-9, atol=1e-9)
        generated = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
        greedy = ids
        for _ in range(4):
            greedy = torch.cat([greedy, model(greedy).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, greedy)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_rotation_leaves_the_ann_unchanged_or_is_refused(name):
    ids = random_windows(256, n=2, length=12, seed=5)
    for rotation in ("online", "full"):
        model = family_model(name).double()
        reference = logits_in(model, ids)
        attach(model)
        if rotation == "full" and model.config.model_type in POST_NORM_ARCHITECTURES:
            before = {k: v.clone() for k, v in model.state_dict().items()}
            with pytest.raises(ValueError, match="rotation='full' is not supported for"):
                apply_rotation(model, rotation)
            assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # nothing touched
            continue
        apply_rotation(model, rotation)
        # float64 models, but Gemma's RMSNorm computes in float32 internally: relative 1e-6, not 1e-9
        rotated = logits_in(model, ids, "ann")
        assert float((rotated - reference).abs().max() / reference.abs().max()) <= 1e-6


def test_models_outside_the_list_get_one_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel, MixtralConfig, MixtralForCausalLM

    moe = MixtralForCausalLM(MixtralConfig(**{**BASE, "num_local_experts": 2, "num_experts_per_tok": 1}))
    with pytest.raises(ValueError, match="MoE layers are not supported"):
        slm.convert(moe, tiny_config(), calibration=random_windows(256))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="spiking-lm supports llama, qwen2, mistral, qwen3, phi3, olmo2"):
        slm.convert(gpt2, tiny_config(), calibration=random_windows(64))
    assert not hasattr(moe, "spiking") and not hasattr(gpt2, "spiking")   # never half-converted


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory, smollm2_tokenizer):
    """Tiny Qwen3 and Gemma-3 saved as HF folders with the real SmolLM2 tokenizer, plus checkpoints."""
    dirs = {}
    for name in ("qwen3", "gemma3"):
        path = tmp_path_factory.mktemp(name)
        tok = smollm2_tokenizer
        model = family_model(name, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model.save_pretrained(path / "model")
        tok.save_pretrained(path / "model")
        slm.convert(model, tiny_config(calibration_tokens=1024, sequence_length=64), tokenizer=tok,
                    base_model=str(path / "model"), show_progress=False)
        slm.save(model, path / "ckpt")
        dirs[name] = path
    return dirs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3", "gemma3"])
def test_lm_eval_runs_the_family(tmp_path, family_dirs, name):
    from .test_lm_eval import lm_eval

    path = family_dirs[name]
    results, proc = lm_eval(tmp_path, "spiking-hf", f"pretrained={path / 'model'},spiking={path / 'ckpt'}",
                            "spiking_enwiki_ppl_short")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ppl = results["results"]["spiking_enwiki_ppl_short"]["word_perplexity,none"]
    assert ppl > 1 and results["config"]["spiking"]["ac"] > 0
