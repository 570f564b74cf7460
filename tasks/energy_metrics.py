"""Per-document metrics of the energy perplexity tasks: lm-eval's perplexities plus energy.

The energy values come from the ``spiking-hf`` model's meter, which records each document's counts while
it computes that document's rolling log-likelihood (``DOCUMENT_ENERGY``). With another model class the
energy metrics are NaN.
"""

from __future__ import annotations

import math
import re

ENERGY_KEYS = ("energy_uj_per_token", "ac_per_token", "mac_per_token")


def _document_energy(text: str) -> dict:
    try:
        from spiking_lm_plugin.lm_eval_model import DOCUMENT_ENERGY
    except ImportError:
        return {}
    return DOCUMENT_ENERGY.get(text, {})


def process_results(doc: dict, results: list) -> dict:
    (loglikelihood,) = results
    text = doc["text"]
    words = len(re.split(r"\s+", text))
    nbytes = len(text.encode("utf-8"))
    energy = _document_energy(text)
    out = {"word_perplexity": (loglikelihood, words), "byte_perplexity": (loglikelihood, nbytes),
           "bits_per_byte": (loglikelihood, nbytes)}
    out.update({key: energy.get(key, math.nan) for key in ENERGY_KEYS})
    return out
