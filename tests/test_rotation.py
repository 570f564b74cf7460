"""Exact transforms: Hadamard constructions and the online Hadamard at the down_proj input."""

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.hadamard import factorize, fast_hadamard, hadamard_matrix
from spiking_lm_plugin.model_surgery import apply_rotation, attach

from .conftest import smollm2_layers
from .helpers import random_windows, tiny_config, tiny_model


@pytest.mark.parametrize("n", [1, 2, 12, 20, 28, 36, 40, 64, 128, 576, 1536, 2048, 14336])
def test_fast_transform_equals_dense_and_is_orthonormal(n):
    h = hadamard_matrix(n, torch.float64)
    torch.testing.assert_close(h @ h.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-10)
    assert set(torch.unique((h * n**0.5).round()).tolist()) <= {-1.0, 1.0}
    x = torch.randn(3, 5, n, dtype=torch.float64)
    torch.testing.assert_close(fast_hadamard(x), x @ h.T, rtol=0, atol=1e-10)


def test_unsupported_sizes_are_reported():
    assert factorize(576) == (36, 16) and factorize(1536) == (12, 128) and factorize(52) is None
    assert factorize(3 * 7 * 11) is None
    with pytest.raises(ValueError, match="no Hadamard construction for size 231"):
        hadamard_matrix(231)


def ann_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("rotation", ["online", "full"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_rotation_alone_leaves_the_ann_unchanged(arch, rotation):
    # mistral at hidden 52: no Hadamard construction, so the residual gets a seeded random orthogonal Q
    extra = {"hidden_size": 52, "num_attention_heads": 2} if arch == "mistral" else {}
    model = tiny_model(arch, **extra)
    ids = random_windows(256, n=2, length=16)
    reference = ann_logits(model, ids)
    attach(model)
    apply_rotation(model, rotation)
    rotated = ann_logits(model, ids)
    assert float((rotated - reference).abs().max() / reference.abs().max()) <= 1e-4


def test_rotation_on_real_layers_is_exact(smollm2_path, smollm2_tokenizer):
    model = smollm2_layers(smollm2_path, 2)      # a private copy: rotation rewrites the weights
    ids = smollm2_tokenizer("The history of the Roman empire spans many centuries.", return_tensors="pt").input_ids
    reference = ann_logits(model, ids)
    attach(model)
    apply_rotation(model, "full")      # hidden 576 = 36 x 16, intermediate 1536 = 12 x 128
    assert float((ann_logits(model, ids) - reference).abs().max() / reference.abs().max()) <= 1e-4


@pytest.mark.parametrize("rotation", ["online", "full"])
def test_rotated_checkpoint_round_trip_and_both_executions(tmp_path, rotation):
    model = tiny_model()
    slm.convert(model, tiny_config(rotation=rotation), calibration=random_windows(256), show_progress=False)
    ids = random_windows(256, n=2, length=16, seed=4)
    slm.set_mode(model, "fused")
    with torch.no_grad():
        fused = model(ids).logits
    slm.set_mode(model, "timestep")
    with torch.no_grad():
        timestep = model(ids).logits
    assert float((fused - timestep).norm() / fused.norm()) <= 1e-2   # fp32 threshold flips: see test_conversion
    slm.save(model, tmp_path / "ckpt")
    fresh = tiny_model()
    slm.load(fresh, tmp_path / "ckpt")
    assert fresh.spiking_rotation == rotation
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, fused)
