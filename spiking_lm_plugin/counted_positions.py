"""Which positions of a padded evaluation batch count for energy (docs/DESIGN.md, "Energy").

lm-eval pads a batch on the right with zeros and, for rolling log-likelihoods, feeds each window with
the end of the previous one as context. Neither is work a document needs: padding is computed and never
counted, and a window's re-processed context is read as keys and values (like a KV cache) but its own
rows are not counted again. The inputs are known before the batch is built, so each row of a batch is
matched back to the input it came from.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .runtime import CountedTokens


class ExpectedInputs:
    """The token sequences a harness is about to feed, each with the first of its positions that counts."""

    def __init__(self) -> None:
        self._first_counted: dict[tuple[int, ...], int] = {}

    def add(self, tokens: Sequence[int], first_counted: int = 0) -> None:
        key = tuple(int(t) for t in tokens)
        first = max(0, min(int(first_counted), len(key)))
        # the same input seen twice (a context shared by two requests) counts from the earlier start
        self._first_counted[key] = min(first, self._first_counted.get(key, first))

    def __len__(self) -> int:
        return len(self._first_counted)

    def _span(self, row: list[int]) -> tuple[int, int] | None:
        """(first counted position, end of the real tokens) of a right-padded row, or None when it is not
        a known input.
        A row ending in real zeros is read as the longest known input it starts with."""
        width = len(row)
        shortest = width
        while shortest > 0 and row[shortest - 1] == 0:
            shortest -= 1
        for length in range(width, shortest - 1, -1):
            first = self._first_counted.get(tuple(row[:length]))
            if first is not None:
                return first, length
        return None

    def positions(self, inputs: torch.Tensor) -> CountedTokens | None:
        """The counted and present positions of a [B, L] batch of these inputs (None when every position
        counts); a row that matches none counts whole (nothing is dropped that might be real)."""
        batch, width = inputs.shape
        counted = torch.ones(batch, width, dtype=torch.bool)
        present = torch.ones(batch, width, dtype=torch.bool)
        for b, row in enumerate(inputs.tolist()):
            span = self._span(row)
            if span is None:
                continue
            first, end = span
            counted[b, :first] = False
            counted[b, end:] = False
            present[b, end:] = False
        if bool(counted.all()):
            return None
        return CountedTokens(counted.to(inputs.device), present.to(inputs.device))


def expected_inputs(requests: Sequence[tuple], max_length: int, scored_only: bool) -> ExpectedInputs:
    """The inputs of lm-eval's causal ``_loglikelihood_tokens`` requests ``(key, context, continuation)``:
    (context + continuation) truncated on the left to ``max_length + 1``, last token dropped. ``scored_only``
    (rolling windows): only the positions whose logits are scored count; otherwise every real position."""
    expected = ExpectedInputs()
    for _, context, continuation in requests:
        tokens = (list(context) + list(continuation))[-(max_length + 1):][:-1]
        expected.add(tokens, len(tokens) - len(continuation) if scored_only else 0)
    return expected
