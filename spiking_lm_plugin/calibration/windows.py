"""Calibration text as token windows [n, L]."""

from __future__ import annotations

from typing import Iterable

import torch


def token_windows(tokenizer, texts: Iterable[str], tokens: int, sequence_length: int) -> torch.Tensor:
    """Concatenate documents (EOS-separated) and cut ``tokens`` tokens into [n, sequence_length] windows."""
    ids: list[int] = []
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + sep)
        if len(ids) >= tokens:
            break
    ids = ids[:tokens]
    if len(ids) < sequence_length:
        if not ids:
            raise ValueError("calibration text produced no tokens")
        sequence_length = len(ids)
    n = len(ids) // sequence_length
    return torch.tensor(ids[: n * sequence_length]).view(n, sequence_length)


def calibration_windows(calibration, tokenizer, text_asset: str, tokens: int, sequence_length: int) -> torch.Tensor:
    """Token windows from what a caller gave: windows [n, L] as they are, a list of texts, or None for the
    ``text_asset``'s calibration split (texts need ``tokenizer``)."""
    texts = calibration is None or (isinstance(calibration, (list, tuple)) and calibration
                                    and isinstance(calibration[0], str))
    if texts:
        if tokenizer is None:
            raise ValueError("a tokenizer is needed to calibrate on text")
        if calibration is None:
            from ..assets import text_documents

            calibration = [d["text"] for d in text_documents(text_asset, "calibration")]
        calibration = token_windows(tokenizer, calibration, tokens, sequence_length)
    if not isinstance(calibration, torch.Tensor) or calibration.ndim != 2:
        raise ValueError("calibration must be token windows [n, L], a list of texts, or None")
    return calibration
