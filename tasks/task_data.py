"""Offline datasets for the task YAML here (``custom_dataset: !function task_data.<name>``).

Everything comes from the registry-package text assets of ``spiking_lm_plugin.assets``; the evaluation
split never overlaps the calibration split used by `spiking-lm convert`.
"""

from __future__ import annotations

import random
import re

import datasets

from spiking_lm_plugin.assets import text_documents


def _dataset(rows: list[dict]) -> datasets.DatasetDict:
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _truncate(text: str, max_words: int | None) -> str:
    if not max_words:
        return text
    words = text.split(" ")
    return " ".join(words[:max_words])


def enwiki_evaluation(max_words: int | None = None, **_: object) -> datasets.DatasetDict:
    """Held-out half of the Wikipedia excerpt (one document per article)."""
    return _dataset([{"title": d["title"], "text": _truncate(d["text"], max_words)}
                     for d in text_documents("enwiki-excerpt", "evaluation")])


def enwiki_evaluation_short(**kwargs: object) -> datasets.DatasetDict:
    """The same documents cut to their first 300 words (quick runs, CI)."""
    kwargs.pop("max_words", None)
    return enwiki_evaluation(max_words=300)


def botchan(**_: object) -> datasets.DatasetDict:
    return _dataset([{"title": d["title"], "text": d["text"]} for d in text_documents("botchan", "all")])


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def enwiki_cloze(num_questions: int = 200, seed: int = 1234, **_: object) -> datasets.DatasetDict:
    """Multiple choice from real text: given two consecutive sentences of an evaluation article, pick the
    true next sentence among four (three distractors drawn from other articles)."""
    rng = random.Random(seed)
    docs = text_documents("enwiki-excerpt", "evaluation")
    per_doc = []
    for doc in docs:
        sents = [s.strip() for para in doc["text"].split("\n") for s in _SENTENCE.split(para)]
        per_doc.append([s for s in sents if 6 <= len(s.split()) <= 40])
    rows = []
    while len(rows) < num_questions:
        i = rng.randrange(len(per_doc))
        sents = per_doc[i]
        if len(sents) < 3:
            continue
        j = rng.randrange(len(sents) - 2)
        others = [rng.choice(per_doc[k]) for k in rng.sample([k for k in range(len(per_doc)) if k != i and per_doc[k]], 3)]
        choices = others + [sents[j + 2]]
        rng.shuffle(choices)
        rows.append({"context": sents[j] + " " + sents[j + 1], "choices": choices,
                     "label": choices.index(sents[j + 2])})
    return _dataset(rows)
