"""Prefixed outlier tokens (PrefixQuant): exact KV-cache injection, generate, checkpoints, and on real
SmolLM2 the search finds the sink and lowers the down_proj coding error."""

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.energy import EnergyMeter
from spiking_lm_plugin.model_surgery import attach, spiking_sites
from spiking_lm_plugin.prefix import candidate_tokens, install_prefix, select_prefix, token_outlier_ratios

from .conftest import smollm2_layers
from .helpers import random_windows, tiny_config, tiny_model

PREFIX = [7, 11, 3]


def logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, **kwargs).logits


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_prefixed_forward_equals_the_concatenated_sequence(arch):
    """Neurons off: running after the cached prefix KV is the same function as reading prefix + input."""
    model = tiny_model(arch)
    ids = random_windows(256, n=2, length=12, seed=3)
    full = logits(model, torch.cat([torch.tensor([PREFIX] * 2), ids], dim=1))[:, len(PREFIX):]
    attach(model)
    install_prefix(model, PREFIX)
    model.spiking.set_mode("analog")          # analog sites, prefix active
    torch.testing.assert_close(logits(model, ids), full, rtol=1e-5, atol=1e-5)
    model.spiking.set_mode("ann")             # ann mode is the base model, no prefix
    torch.testing.assert_close(logits(model, ids), logits(tiny_model(arch), ids), rtol=1e-5, atol=1e-5)


def test_generate_and_kv_cache_continue_after_the_prefix():
    model = tiny_model()
    ids = random_windows(256, n=1, length=8, seed=2)
    greedy = torch.cat([torch.tensor([PREFIX]), ids], dim=1)
    with torch.no_grad():
        for _ in range(5):                             # greedy decoding over the explicit concatenation
            greedy = torch.cat([greedy, model(greedy).logits[:, -1:].argmax(-1)], dim=1)
    attach(model)
    install_prefix(model, PREFIX)
    model.spiking.set_mode("analog")
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(out, greedy[:, len(PREFIX):])
    # left-padded batch with an attention mask: the padded row continues exactly like the unpadded one
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.ones_like(ids)], dim=1)
    out2 = model.generate(padded, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(out2[:, 2:], out)


def test_a_second_bos_is_hidden_behind_a_bos_prefix():
    model = tiny_model(bos_token_id=5)
    ids = torch.cat([torch.tensor([[5]]), random_windows(256, n=1, length=9, seed=6)], dim=1)
    attach(model)
    install_prefix(model, [5, 9])
    model.spiking.set_mode("analog")
    hidden = logits(model, ids)
    # the same as an explicit mask that zeroes the input's BOS as a key
    install_prefix(model, [5, 9], bos_token_id=None)
    model.spiking.prefix.bos_token_id = None
    mask = torch.ones_like(ids)
    mask[0, 0] = 0
    torch.testing.assert_close(hidden, logits(model, ids, attention_mask=mask), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(hidden, logits(model, ids), atol=1e-4)


@pytest.mark.smoke
def test_prefix_round_trips_and_both_executions_agree(tmp_path):
    model = tiny_model()
    slm.convert(model, tiny_config(prefix=PREFIX), calibration=random_windows(256), show_progress=False)
    ids = random_windows(256, n=2, length=16, seed=8)
    slm.set_mode(model, "fused")
    expected = logits(model, ids)
    slm.save(model, tmp_path / "ckpt")
    fresh = tiny_model()
    state = slm.load(fresh, tmp_path / "ckpt")
    assert state.prefix == PREFIX and fresh.spiking.prefix.tokens == PREFIX
    assert torch.equal(logits(fresh, ids), expected)
    # fused == timestep holds with the prefix on (float64: the same function)
    fresh.double()
    install_prefix(fresh, PREFIX)                      # KV recomputed in float64
    meters = {m: EnergyMeter() for m in ("fused", "timestep")}
    out = {}
    for mode in meters:
        slm.set_mode(fresh, mode)
        fresh.spiking.meter = meters[mode]
        out[mode] = logits(fresh, ids)
    assert float((out["fused"] - out["timestep"]).abs().max() / out["fused"].abs().max()) <= 1e-10
    # the meter counts the input tokens only; the prefix KV is read (attention pairs), never re-computed
    assert meters["fused"].tokens == ids.numel()


def test_bad_prefix_recipes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="prefix"):
        slm.SpikingConfig(prefix="sometimes")
    with pytest.raises(ValueError, match="non-negative"):
        slm.SpikingConfig(prefix=[1, -2])


@pytest.fixture(scope="module")
def smollm2_six_layers(smollm2_path):
    return smollm2_layers(smollm2_path, 6)   # the sink's massive activations build up over the first layers


def down_in_error(model, windows, tokens, spec_config):
    """Relative MSE of the fitted down_proj neurons on the activations they see, with this prefix."""
    calib = slm.conversion.calibrate(model, spec_config(tokens), windows, show_progress=False)
    fit = slm.conversion.fit(calib.samples, spec_config(tokens), show_progress=False)
    rows = [i for i, n in enumerate(calib.site_names) if n.endswith("down_in")]
    return float(fit.loss[rows].mean()), calib


def test_prefix_search_finds_the_sink_on_real_text(smollm2_six_layers, smollm2_tokenizer):
    from spiking_lm_plugin.assets import text_documents
    from spiking_lm_plugin.calibration import token_windows

    docs = [d["text"] for d in text_documents("enwiki-excerpt", "calibration")]
    windows = token_windows(smollm2_tokenizer, docs, 2048, 128)
    attach(smollm2_six_layers)
    search = select_prefix(smollm2_six_layers, windows[:4], specials=[smollm2_tokenizer.eos_token_id])
    # the first token of every window is a massive-activation sink; one prefix token absorbs it
    assert search.ratio_before > 64 and search.tokens and search.ratio_after < 64, search
    # trials that stop early once worse than the best still choose the exhaustive search's argmin
    base = token_outlier_ratios(smollm2_six_layers, windows[:4], [])
    candidates = candidate_tokens(windows[:4], base, 64.0, [smollm2_tokenizer.eos_token_id])
    full = {tok: float(token_outlier_ratios(smollm2_six_layers, windows[:4], [tok]).max()) for tok in candidates}
    assert len(candidates) > 1 and search.tokens[0] == min(full, key=full.get), full
    assert search.ratio_after == full[search.tokens[0]] or len(search.tokens) > 1
    loser = max(full, key=full.get)
    assert token_outlier_ratios(smollm2_six_layers, windows[:4], [loser], bound=min(full.values())) is None
    assert smollm2_six_layers.spiking.prefix is None
    # neurons off, the prefix barely changes the continuation log-likelihoods (the ANN reads one more token)
    install_prefix(smollm2_six_layers, search.tokens)
    nll = {}
    for mode in ("ann", "analog"):                     # plain base model / analog sites after the prefix
        smollm2_six_layers.spiking.set_mode(mode)
        out = logits(smollm2_six_layers, windows[4:8])[:, :-1]
        nll[mode] = float(torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), windows[4:8, 1:].reshape(-1)))
    assert abs(nll["analog"] - nll["ann"]) <= 0.02 * nll["ann"], nll

    def config(tokens):
        return tiny_config(prefix=tokens, sites=("down_in",), samples_per_site=4096, timesteps=6)

    plain, _ = down_in_error(smollm2_six_layers, windows, [], config)
    prefixed, calib = down_in_error(smollm2_six_layers, windows, search.tokens, config)
    assert calib.prefix == search.tokens
    assert prefixed < 0.8 * plain, (plain, prefixed)
    assert not any(s._forward_hooks for s in spiking_sites(smollm2_six_layers).values())   # hooks removed


def _calibrate_with_a_massive_token(config: slm.SpikingConfig, boost: float):
    """Calibrate a tiny LLaMA whose layer-0 ``up`` activation of one token (window 0, position 5) is scaled
    by ``boost``: that token becomes a massive outlier at layer 0's down_proj input and in the residual."""
    model = tiny_model(num_hidden_layers=3)
    attach(model)
    up = spiking_sites(model)["layers.0.up"]

    def scale(module, args):
        x = args[0].clone()
        if x.shape[1] > 5:                          # not the prefix's own forward
            x[0, 5] *= boost
        return (x,)

    up.register_forward_pre_hook(scale)
    return slm.conversion.calibrate(model, config, random_windows(256, n=4, length=16), show_progress=False)


def test_outlier_tokens_left_after_the_prefix_do_not_set_the_taus():
    clean = _calibrate_with_a_massive_token(tiny_config(prefix=PREFIX), 1.0)
    left_out = _calibrate_with_a_massive_token(tiny_config(prefix=PREFIX), 1e4)
    kept = _calibrate_with_a_massive_token(tiny_config(prefix=PREFIX, exclude_outlier_tokens=False), 1e4)
    no_prefix = _calibrate_with_a_massive_token(tiny_config(prefix="none"), 1e4)
    assert clean.outlier_tokens_left_out == 0
    assert left_out.outlier_tokens_left_out == 1                      # one token, counted once
    assert kept.outlier_tokens_left_out is None and no_prefix.outlier_tokens_left_out is None
    for site in ("layers.0.down_in", "layers.1.down_in", "layers.2.down_in"):
        # left out from its layer on, the massive token sets no maximum; the other tokens barely move
        assert float((left_out.taus[site] / clean.taus[site]).max()) < 2.0, site
    site = "layers.0.down_in"
    for calib in (kept, no_prefix):
        assert float((calib.taus[site] / clean.taus[site]).max()) > 20.0
    # sites recorded before the token shows up at a down_proj input keep it (nothing known yet)
    assert float(left_out.taus["layers.0.up"].max()) > 100 * float(clean.taus["layers.0.up"].max())


def test_recorded_rows_follow_each_site_layout():
    from spiking_lm_plugin.calibration.recording import recorded_rows

    keep = torch.tensor([[True, False, True], [True, True, True]])
    hidden = torch.arange(2 * 3 * 4.0).view(2, 3, 4)                       # [B, L, C]
    assert torch.equal(recorded_rows(hidden, keep), keep)
    kv = torch.randn(2, 5, 5, 8)                                             # [B, H, prefix 2 + L, D]
    rows = recorded_rows(kv, keep)
    assert rows.shape == (2, 5, 5) and int(rows.sum()) == 5 * (2 * 5 - 1)
    assert not rows[0, :, 3].any() and rows[:, :, :2].all()                 # token 1 of batch 0; the prefix kept
    probs = torch.rand(2, 5, 3, 7, 1)                                        # softmax [B, H, L, S, 1]
    assert int(recorded_rows(probs, keep).sum()) == probs.numel() - 5 * 7
    assert recorded_rows(hidden, None) is None
    assert recorded_rows(hidden, torch.ones(2, 3, dtype=torch.bool)) is None


def test_reservoir_records_only_the_kept_rows_of_a_strided_site():
    """q / k / v reach the reservoir as transposed views; the rows of left-out tokens are never sampled and
    never set a channel's max, whatever the layout."""
    from spiking_lm_plugin.calibration import SiteReservoir
    from spiking_lm_plugin.calibration.recording import recorded_rows

    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[1, 4] = False
    q = (torch.rand(2, 6, 3, 4) + 1.0).transpose(1, 2)                     # [B, H, L, D], not contiguous
    q[1, :, 4] = 1000.0                                                       # the left-out token's rows
    res = SiteReservoir("layers.0.q", capacity=10_000, channels=4, seed=0)
    res.add(q, recorded_rows(q, keep))
    assert res.filled == q.numel() - 3 * 4 and float(res.values.max()) < 2.0
    assert float(res.channel_max.max()) < 2.0
    assert torch.equal(res.channel_ids.bincount(minlength=4), torch.full((4,), res.filled // 4))
    small = SiteReservoir("layers.0.q", capacity=7, channels=4, seed=0)
    small.add(q, recorded_rows(q, keep))
    assert small.filled == 7 and float(small.values.max()) < 2.0


@pytest.mark.parametrize("prefix", [[], PREFIX], ids=["no-prefix", "prefix"])
def test_calibration_records_what_the_full_forward_shows_every_site(prefix):
    """The calibration forward skips the lm_head matmul; every reservoir must still equal the one a full
    model forward in analog mode fills (the head site included)."""
    from spiking_lm_plugin.calibration import record_activations

    windows = random_windows(256, n=4, length=16, seed=9)
    filled = {}
    for path in ("calibration", "full forward"):
        model = tiny_model()
        attach(model)
        install_prefix(model, prefix)
        names = list(spiking_sites(model))
        if path == "calibration":
            filled[path] = record_activations(model, windows, names, capacity=64, show_progress=False)
        else:
            import spiking_lm_plugin.calibration.recording as recording

            original = recording.record_batch
            recording.record_batch = lambda m, b: m(input_ids=b, use_cache=False)
            try:
                filled[path] = record_activations(model, windows, names, capacity=64, show_progress=False)
            finally:
                recording.record_batch = original
        filled[path] = filled[path].reservoirs
    for name, res in filled["calibration"].items():
        other = filled["full forward"][name]
        assert res.seen == other.seen > 0 and torch.equal(res.values, other.values), name
        assert torch.equal(res.channel_max, other.channel_max) and torch.equal(res.channel_ids, other.channel_ids)
