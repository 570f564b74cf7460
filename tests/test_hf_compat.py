"""The transformers version layer: the KV cache reaches the spiking attention on the installed release,
generation with a cache equals the full forward (prefix on and off, both executions), and a cache or mask
keyword the layer does not know is refused, never ignored."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import transformers

import spiking_lm_plugin as slm
from spiking_lm_plugin import hf_compat
from spiking_lm_plugin.hf_compat import CompatibilityError, output_cache, with_cache

from .helpers import random_windows, tiny_config, tiny_model

PACKAGE = Path(slm.__file__).parent


def converted(prefix: list[int] | None = None):
    model = tiny_model()
    slm.convert(model, tiny_config(prefix=prefix or "none"), calibration=random_windows(256), show_progress=False)
    return model.double()


@pytest.mark.smoke
@pytest.mark.parametrize("mode", ["fused", "timestep"])
@pytest.mark.parametrize("prefix", [None, [7, 11]], ids=["no-prefix", "prefix"])
def test_cached_generation_equals_the_full_forward(mode, prefix):
    """float64: the cached step and the full forward see the same analog values, so the same spikes."""
    model = converted(prefix)
    slm.set_mode(model, mode)
    ids = random_windows(256, n=2, length=10, seed=4)
    with torch.no_grad():
        full = model(ids).logits
        cache = output_cache(model(ids[:, :-1], use_cache=True))
        assert cache is not None and cache.get_seq_length() == ids.shape[1] - 1 + len(prefix or [])
        step = model(ids[:, -1:], **with_cache({"use_cache": True}, cache)).logits[:, -1]
        torch.testing.assert_close(step, full[:, -1], rtol=1e-9, atol=1e-9)
        generated = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
        greedy = ids
        for _ in range(4):                   # the same decoding without any cache: one full forward a token
            greedy = torch.cat([greedy, model(greedy).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, greedy)


@pytest.mark.smoke
def test_an_unknown_cache_keyword_is_refused_with_the_version():
    model = converted()
    slm.set_mode(model, "fused")
    attn = model.model.layers[0].self_attn
    hidden = torch.zeros(1, 3, model.config.hidden_size, dtype=torch.float64)
    cos_sin = model.model.rotary_emb(hidden, torch.arange(3)[None])
    with pytest.raises(CompatibilityError) as info:
        attn(hidden, position_embeddings=cos_sin, attention_mask=None, kv_store=object())
    message = str(info.value)
    assert "'kv_store'" in message and transformers.__version__ in message and "\n" not in message


def test_a_cache_reaching_the_attention_function_and_legacy_caches_are_refused():
    cache = hf_compat.new_cache(tiny_model().config)
    with pytest.raises(CompatibilityError, match="passed the KV cache"):
        hf_compat.check_attention_kwargs({"past_key_values": cache, "cache_position": None}, "attn")
    hf_compat.check_attention_kwargs({"cache_position": torch.arange(3), "use_cache": True}, "attn")
    with pytest.raises(CompatibilityError, match="legacy tuple"):
        hf_compat.cache_of({"past_key_values": ((torch.zeros(1),),)})
    with pytest.raises(CompatibilityError, match="4-D attention mask"):
        hf_compat.check_attention_mask(torch.ones(2, 5), "attn")


def test_attention_runs_transformers_own_forward_through_the_registered_function():
    """The wrapper holds the model's own attention module; transformers calls the ``spiking`` function
    (a model loaded with that implementation but never converted gets one clear line, not wrong numbers)."""
    from transformers import AutoModelForCausalLM

    model = converted()
    inner = model.model.layers[0].self_attn.attn
    assert type(inner).__module__.startswith("transformers.models.llama")
    assert inner.config._attn_implementation == hf_compat.ATTENTION_NAME
    plain = AutoModelForCausalLM.from_config(model.config)           # the name is registered now
    with pytest.raises(CompatibilityError, match="without its block"):
        plain(random_windows(256, n=1, length=4))


def test_the_cache_keyword_is_the_one_the_installed_llama_takes():
    import inspect

    from transformers import LlamaModel

    assert hf_compat.cache_keyword() in inspect.signature(LlamaModel.forward).parameters


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_compat_module_touches_transformers_internals():
    """Other modules import transformers' public top level only, and never name the cache keyword."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "hf_compat.py":
            continue
        text = path.read_text()
        private = [m for m in _imported_modules(path) if m.startswith("transformers.")]
        if private or "_attn_implementation" in text or "past_key_values" in text:
            offenders.append(f"{path.relative_to(PACKAGE)}: {private or 'private name'}")
    assert not offenders, offenders
