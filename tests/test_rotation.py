"""Exact transforms: Hadamard constructions and the online Hadamard at the down_proj input."""

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.hadamard import (describe_construction, factorize, fast_hadamard, hadamard_matrix,
                                        jacobsthal, online_transform, small_hadamard)
from spiking_lm_plugin.model_surgery import apply_rotation, attach

from .conftest import smollm2_layers
from .helpers import random_windows, tiny_config, tiny_model


@pytest.mark.parametrize("n", [1, 2, 12, 20, 28, 36, 40, 64, 128, 576, 1536, 2048])
def test_fast_transform_equals_dense_and_is_orthonormal(n):
    h = hadamard_matrix(n, torch.float64)
    torch.testing.assert_close(h @ h.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-10)
    assert set(torch.unique((h * n**0.5).round()).tolist()) <= {-1.0, 1.0}
    x = torch.randn(3, 5, n, dtype=torch.float64)
    torch.testing.assert_close(fast_hadamard(x), x @ h.T, rtol=0, atol=1e-10)


def test_unsupported_sizes_are_reported():
    assert factorize(576) == (36, 16) and factorize(1536) == (12, 128) and factorize(3 * 7 * 11) is None
    with pytest.raises(ValueError, match="no Hadamard construction for size 231"):
        hadamard_matrix(231)
    with pytest.raises(ValueError, match="no Hadamard construction for size 231"):
        online_transform(231, "hadamard")
    assert online_transform(231).kind == "random-kronecker"


#: hidden and intermediate sizes of 30 popular models; the last two had no construction before GF(p^k)
POPULAR_SIZES = [576, 896, 1024, 1152, 1536, 2048, 2304, 2560, 3072, 3584, 3840, 4096, 4864, 5120, 5632, 6144,
                 6912, 8192, 8960, 9216, 9728, 10240, 12288, 13824, 14336, 15360, 17408, 18944, 25600, 27648,
                 28672, 11008, 29568]


@pytest.mark.parametrize("m", [12, 28, 36, 52, 100, 244, 344, 924, 144])
def test_small_orders_are_hadamard(m):
    """Paley I/II over prime and prime-power fields and Kronecker products: entries +-1, H H^T = m I."""
    h = small_hadamard(m)
    assert h is not None and set(torch.unique(h).tolist()) == {-1.0, 1.0}
    assert torch.equal(h @ h.T, m * torch.eye(m, dtype=torch.float64))


def test_prime_power_fields_give_a_valid_jacobsthal_matrix():
    """Over GF(q): zero diagonal, (q - 1)/2 ones per row, Q Q^T = q I - J, and Q^T = +-Q as q = 1 / 3 mod 4."""
    for q, sign in ((25, 1), (27, -1), (49, 1), (343, -1)):
        jac = jacobsthal(q)
        ones = torch.ones(q, q, dtype=torch.float64)
        assert torch.equal(jac.diagonal(), torch.zeros(q, dtype=torch.float64))
        assert torch.equal((jac == 1).sum(1), torch.full((q,), (q - 1) // 2))
        assert torch.equal(jac @ jac.T, q * torch.eye(q, dtype=torch.float64) - ones)
        assert torch.equal(jac.T, sign * jac)


def test_the_first_releases_choices_are_kept():
    """Sizes constructible before GF(p^k) keep the same matrix (their checkpoints were fitted behind it)."""
    assert describe_construction(28) == "Paley II over GF(13)" and factorize(896) == (28, 32)
    assert factorize(6656) == (104, 64)         # not the smaller 52 of GF(5^2): 6656 was supported as 104 x 64


@pytest.mark.parametrize("n", POPULAR_SIZES)
def test_every_popular_size_has_an_exact_fast_hadamard(n):
    t = online_transform(n)
    assert t.kind == "hadamard" and t.m * t.p == n
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(4, n, generator=gen, dtype=torch.float64)
    y = t.apply(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-12, atol=0)   # orthogonal
    for j in (0, 1, n - 1):                                                         # fast == dense columns
        basis = torch.zeros(n, dtype=torch.float64)
        basis[j] = 1
        torch.testing.assert_close(t.apply(basis), t.column(j), rtol=0, atol=1e-12)
    if n <= 2304:                                   # densely for the small sizes
        dense = t.matrix()
        torch.testing.assert_close(dense @ dense.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-10)
        torch.testing.assert_close(y, x @ dense.T, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [231, 1536, 12 * 129])
def test_the_seeded_fallback_is_exact_and_reproducible(n):
    t = online_transform(n, "random", seed=3)
    dense = t.matrix()
    torch.testing.assert_close(dense @ dense.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-10)
    x = torch.randn(2, n, dtype=torch.float64)
    torch.testing.assert_close(t.apply(x), x @ dense.T, rtol=0, atol=1e-10)
    assert torch.equal(online_transform(n, "random", seed=3).matrix(), dense)
    assert not torch.equal(online_transform(n, "random", seed=4).matrix(), dense)


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
    assert fresh.spiking.rotation == rotation
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, fused)


@pytest.mark.parametrize("transform", ["auto", "random"])
def test_a_llama_with_intermediate_11008_converts_with_the_default_recipe(tmp_path, transform):
    """LLaMA-2-7B's down_proj size: rotation leaves the ANN exact, both executions agree (float64),
    the checkpoint round-trips and names the transform."""
    model = tiny_model(intermediate_size=11008, num_hidden_layers=1).double()
    ids = random_windows(256, n=2, length=12, seed=5)
    reference = ann_logits(model, ids)
    attach(model)
    used = apply_rotation(model, "online", transform=transform)
    assert used == {"11008": online_transform(11008, transform).describe()}
    torch.testing.assert_close(ann_logits(model, ids), reference, rtol=1e-10, atol=1e-10)
    model = tiny_model(intermediate_size=11008, num_hidden_layers=1)
    config = tiny_config(online_transform=transform)
    slm.convert(model, config, calibration=random_windows(256, n=4, length=32), show_progress=False)
    model.double()
    fused = logits_in(model, ids, "fused")
    torch.testing.assert_close(logits_in(model, ids, "timestep"), fused, rtol=1e-10, atol=1e-10)
    model.float()
    expected = logits_in(model, ids, "fused")
    slm.save(model, tmp_path / "ckpt")
    fresh = tiny_model(intermediate_size=11008, num_hidden_layers=1)
    state = slm.load(fresh, tmp_path / "ckpt")
    assert state.fit["online_transforms"] == used
    assert torch.equal(logits_in(fresh, ids, "fused"), expected)


def logits_in(model, ids, mode):
    slm.set_mode(model, mode)
    with torch.no_grad():
        return model(ids).logits


def test_llama2_7b_recipe_parses_and_reaches_calibration():
    """configs/llama2_7b_t8_g2.yaml through the real LightningCLI parser; its recipe converts a
    LLaMA-2-7B-shaped layer (hidden 4096, intermediate 11008, 32 heads; one layer, small vocabulary,
    random weights) with the online transform."""
    from pathlib import Path

    import yaml

    from lightning_modules import ActivationDataModule, NeuronFitModule
    from lightning_modules.cli import SpikingTrainCLI

    path = Path(__file__).resolve().parents[1] / "configs" / "llama2_7b_t8_g2.yaml"
    cli = SpikingTrainCLI(NeuronFitModule, ActivationDataModule, run=False,
                       args=["--config", str(path), "--data.device", "cpu", "--trainer.accelerator", "cpu"])
    data = cli.datamodule
    assert data.config.rotation == "online" and data.config.online_transform == "auto"
    assert yaml.safe_load(path.read_text())["data"]["model"] == "meta-llama/Llama-2-7b-hf"
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=1,
                                         num_attention_heads=32, num_key_value_heads=32, vocab_size=256,
                                         max_position_embeddings=128)).eval()
    from dataclasses import replace

    assert cli.model.spiking == data.config and data.config.calibration_tokens == 65536
    recipe = replace(data.config, prefix="none", calibration_tokens=64, sequence_length=32, samples_per_site=256,
                     fit=slm.FitConfig(rounds=1, threshold_steps=1, base_steps=1, batch_samples=256))
    state = slm.convert(model, recipe, calibration=random_windows(256, n=2, length=32), show_progress=False)
    assert state.fit["online_transforms"] == {"11008": "Hadamard 344 x 32 (Paley I over GF(7^3), Sylvester 32)"}
    assert state.fit["calibration_tokens"] == 64
