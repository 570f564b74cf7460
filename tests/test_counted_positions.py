"""Padding and a rolling window's re-processed context are computed but never counted: a padded batch
meters exactly what its documents cost one at a time (docs/DESIGN.md, "Energy")."""

from dataclasses import fields

import pytest
import torch
from lm_eval.api.instance import Instance

from spiking_lm_plugin.counted_positions import ExpectedInputs, expected_inputs
from spiking_lm_plugin.lm_eval_model import SpikingHFLM

TEXTS = [
    ("The river ran past the old mill,", " and the miller's children watched it from the bridge."),
    ("In 1905 the company", " moved its offices to a larger building near the harbour."),
    ("She said", " no."),
    ("A short history of the town begins with its market, which drew traders from three valleys", " every spring."),
    ("Rain", " fell."),
]

DOCUMENT = ("The lighthouse stood at the end of a long stone pier. Every night its keeper climbed the ninety steps, "
            "trimmed the wick and wound the clockwork that turned the lens, and every morning he wrote the weather "
            "in a book that is still kept in the town library.")


def test_rows_are_matched_to_their_inputs_through_the_padding():
    expected = ExpectedInputs()
    expected.add([5, 6, 7])
    expected.add([8, 9, 0, 4, 0], first_counted=2)      # real zeros inside and at the end
    expected.add([3])
    inputs = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 4, 0], [3, 0, 0, 0, 0], [1, 2, 0, 0, 0]])
    positions = expected.positions(inputs)
    assert positions.present.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    # the last row is no known input: it counts whole rather than losing real tokens
    assert positions.counted.tolist() == [[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_harness_inputs_drop_the_last_token_and_count_the_scored_span_of_a_window():
    requests = [(None, [1, 2, 3], [4, 5]), (None, [7], [8, 9, 10, 11])]
    all_positions = expected_inputs(requests, max_length=8, scored_only=False)
    scored = expected_inputs(requests, max_length=3, scored_only=True)
    assert all_positions.positions(torch.tensor([[1, 2, 3, 4]])) is None        # nothing left out
    # truncated on the left to max_length + 1 = 4 tokens: input [8, 9, 10], all three positions scored
    assert scored.positions(torch.tensor([[8, 9, 10]])) is None
    # input [2, 3, 4]: only the positions predicting the continuation [4, 5] count; [2] is context
    assert scored.positions(torch.tensor([[2, 3, 4]])).counted.tolist() == [[0, 1, 1]]


def _meter_totals(lm: SpikingHFLM) -> dict[str, float]:
    summary = lm.meter.summary()
    return {key: summary[key] for key in ("tokens", "mac", "ac", "energy_j", "neuron_j", "read_write_j")}


def _assert_same_events(got: SpikingHFLM, want: SpikingHFLM) -> None:
    """Every op event's every count (what any cost model prices, the paper's full rectangles included)."""
    assert got.meter.events.keys() == want.meter.events.keys()
    for key, event in want.meter.events.items():
        counts = [f.name for f in fields(event) if f.metadata.get("additive")]
        found = got.meter.events[key]
        assert [float(getattr(found, n)) for n in counts] == pytest.approx(
            [float(getattr(event, n)) for n in counts], rel=1e-9), key


def _lm(tiny_model_dir, tiny_checkpoint, batch_size: int, mode: str = "fused", **kwargs) -> SpikingHFLM:
    # float64: the batched and the single forwards then fire the same spikes (fp32 matmul order differs)
    return SpikingHFLM(pretrained=str(tiny_model_dir), spiking=str(tiny_checkpoint), device="cpu",
                       batch_size=batch_size, dtype="float64", mode=mode, read_write=True, **kwargs)


@pytest.mark.parametrize("mode", ["fused", "timestep"])
def test_a_padded_batch_meters_what_its_documents_cost_one_at_a_time(tiny_model_dir, tiny_checkpoint, mode):
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(TEXTS)]
    batched = _lm(tiny_model_dir, tiny_checkpoint, batch_size=len(TEXTS), mode=mode)
    single = _lm(tiny_model_dir, tiny_checkpoint, batch_size=1, mode=mode)
    scores_batched = batched.loglikelihood(requests)
    scores_single = single.loglikelihood(requests)
    assert [s[0] for s in scores_batched] == pytest.approx([s[0] for s in scores_single], rel=1e-9)
    lengths = [len(sum(single._encode_pair(c, x), [])) - 1 for c, x in TEXTS]
    assert len(set(lengths)) > 1                               # the batch really was padded
    got, want = _meter_totals(batched), _meter_totals(single)
    assert got["tokens"] == want["tokens"] == sum(lengths)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
    _assert_same_events(batched, single)


def test_rolling_windows_count_each_document_token_once(tiny_model_dir, tiny_checkpoint):
    request = [Instance("loglikelihood_rolling", {}, (DOCUMENT,), 0)]
    batched = _lm(tiny_model_dir, tiny_checkpoint, batch_size=8, max_length=16)
    single = _lm(tiny_model_dir, tiny_checkpoint, batch_size=1, max_length=16)
    (result,) = batched.loglikelihood_rolling(request)
    single.loglikelihood_rolling(request)
    document_tokens = len(batched.tok_encode(DOCUMENT))
    assert document_tokens > 3 * 16                            # several windows, the last one re-reading context
    assert result.energy["tokens"] == document_tokens
    got, want = _meter_totals(batched), _meter_totals(single)
    assert got["tokens"] == want["tokens"] == document_tokens
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
    _assert_same_events(batched, single)
