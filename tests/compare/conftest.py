"""Shared data for the comparison tests: a small two-class text task over the tiny BERT and a tiny static table."""

import csv
import random

import pytest

from hf_metaembed.testing import make_tiny_static_vectors

FILLER = ["the", "a", "movie", "film", "plot", "story", "actor", "it", "was", "this"]
CUES = {0: ["bad", "worst", "boring", "hate"], 1: ["good", "great", "best", "fun"]}


def polarity_texts(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`count` short texts with one cue word each; labels `neg` / `pos` alternate."""
    rng = random.Random(seed)
    texts, labels = [], []
    for index in range(count):
        label = index % 2
        words = [rng.choice(FILLER) for _ in range(4)] + [rng.choice(CUES[label])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(("neg", "pos")[label])
    return texts, labels


def write_csv(path, texts, labels, extra: dict | None = None) -> str:
    extra = extra or {}
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence", "label", *extra])
        for index, (text, label) in enumerate(zip(texts, labels)):
            writer.writerow([text, label, *(values[index] for values in extra.values())])
    return str(path)


@pytest.fixture(scope="session")
def tiny_static(tmp_path_factory) -> str:
    return make_tiny_static_vectors(tmp_path_factory.mktemp("tiny_static") / "static")
