"""Per-document metrics of the energy perplexity tasks: lm-eval's perplexities plus energy.

The energy values come from the ``spiking-hf`` model's meter: it counts each request while computing its
rolling log-likelihood and returns the value with that request's energy attached (``.energy``). With
another model class the energy metrics are NaN.
"""

from __future__ import annotations

import math
import re

ENERGY_KEYS = ("energy_uj_per_token", "ac_per_token", "mac_per_token")


def process_results(doc: dict, results: list) -> dict:
    (loglikelihood,) = results
    text = doc["text"]
    words = len(re.split(r"\s+", text))
    nbytes = len(text.encode("utf-8"))
    energy = getattr(loglikelihood, "energy", {})
    out = {"word_perplexity": (loglikelihood, words), "byte_perplexity": (loglikelihood, nbytes),
           "bits_per_byte": (loglikelihood, nbytes)}
    out.update({key: energy.get(key, math.nan) for key in ENERGY_KEYS})
    return out
