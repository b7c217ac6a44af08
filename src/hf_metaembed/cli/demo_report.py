"""What `hf-metaembed demo` shows once trained: that the saved model reloads as remote code without hf_metaembed, and
which backbone each word relied on (DME fusion weights), as a table and as a plot."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..io.files import atomic_path
from .errors import CLIError, require

BACKBONE_LABELS = ("MiniLM", "fastText")


_REMOTE_SCRIPT = r"""
import importlib.abc, json, sys

class NoHfMetaembed(importlib.abc.MetaPathFinder):
    # behave like a machine where hf_metaembed was never installed
    def find_spec(self, name, path=None, target=None):
        if name == "hf_metaembed" or name.startswith("hf_metaembed."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NoHfMetaembed())
import numpy, torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoProcessor

folder, texts_path, out_path = sys.argv[1:4]
texts = json.load(open(texts_path, encoding="utf-8"))
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
batch = processor(texts, return_tensors="pt")
with torch.inference_mode():
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()(**batch)
    logits = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()(**batch).logits
numpy.savez(out_path, pooled=base.pooler_output.numpy(), fusion_weights=base.fusion_weights.numpy(),
            logits=logits.numpy(), module=type(processor).__module__)
"""


def check_remote_code_reload(folder: str | os.PathLike, model, processor, texts: list[str]) -> float:
    """Reload `folder` with `trust_remote_code=True` in a Python that cannot import hf_metaembed and compare its
    pooled vectors, fusion weights and logits with `model`'s; returns the largest absolute difference."""
    import numpy as np

    with tempfile.TemporaryDirectory() as scratch:
        texts_path, out_path = os.path.join(scratch, "texts.json"), os.path.join(scratch, "out.npz")
        with open(texts_path, "w", encoding="utf-8") as handle:
            json.dump(texts, handle)
        environment = dict(os.environ, HF_MODULES_CACHE=os.path.join(scratch, "modules"), HF_HUB_OFFLINE="1")
        environment.update(TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1")
        result = subprocess.run(
            [sys.executable, "-c", _REMOTE_SCRIPT, str(Path(folder).resolve()), texts_path, out_path],
            capture_output=True,
            text=True,
            env=environment,
            cwd=scratch,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise CLIError(f"reloading the saved model with trust_remote_code failed: {last}")
        remote = dict(np.load(out_path))
    if str(remote["module"]).startswith("hf_metaembed"):
        raise CLIError("the reload check imported hf_metaembed instead of the saved remote code")
    batch = processor(texts, return_tensors="pt")
    model.eval()
    with torch.inference_mode():
        local = model(**batch)
        base = model.metaembed(**batch)
    pairs = [
        (base.pooler_output, remote["pooled"]),
        (base.fusion_weights, remote["fusion_weights"]),
        (local.logits, remote["logits"]),
    ]
    return max(float(np.abs(mine.numpy() - theirs).max()) for mine, theirs in pairs)


def word_weights(model, processor, texts: list[str]) -> list[dict]:
    """Per sentence: its words, each word's DME weight for every backbone `(words, backbones)`, and the prediction."""
    batch = processor(texts, return_tensors="pt")
    model.eval()
    with torch.inference_mode():
        outputs = model(**batch)
    rows = []
    for row, text in enumerate(texts):
        words = text.split()
        weights = outputs.fusion_weights[row, : len(words)].float().numpy()
        predicted = model.config.id2label[int(outputs.logits[row].argmax())]
        rows.append({"text": text, "words": words, "weights": weights, "predicted": predicted})
    return rows


def format_weight_table(rows: list[dict], labels: list[str]) -> str:
    """A plain-text table per sentence: each word and its weight for every backbone (the larger one marked)."""
    lines = []
    for number, row in enumerate(rows, start=1):
        lines.append(f"sentence {number} (true: {labels[number - 1]}, predicted: {row['predicted']}):")
        width = max(12, *(len(word) for word in row["words"]))
        lines.append(f"  {'word':<{width}}  " + "  ".join(f"{name:>8}" for name in BACKBONE_LABELS) + "  relies on")
        for word, weights in zip(row["words"], row["weights"]):
            values = "  ".join(f"{value:8.3f}" for value in weights)
            lines.append(f"  {word:<{width}}  {values}  {BACKBONE_LABELS[int(weights.argmax())]}")
    return "\n".join(lines)


def plot_word_weights(rows: list[dict], path: str | os.PathLike) -> None:
    """One heat-map row pair per sentence: the DME weight of each backbone for every word (PNG, Agg backend)."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    width = max(8.0, 0.75 * max(len(r["words"]) for r in rows))
    figure, axes = plt.subplots(len(rows), 1, figsize=(width, 2.3 * len(rows)), layout="constrained", squeeze=False)
    axes = list(axes[:, 0])
    for axis, row in zip(axes, rows):
        weights = row["weights"].T  # (backbones, words)
        image = axis.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for (backbone, word), value in np.ndenumerate(weights):
            axis.text(
                word,
                backbone,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if value > 0.6 else "white",
            )
        axis.set_xticks(range(len(row["words"])), row["words"], rotation=30, ha="right", fontsize=8)
        axis.set_yticks(range(len(BACKBONE_LABELS)), BACKBONE_LABELS, fontsize=8)
        axis.set_title(f"predicted {row['predicted']}", fontsize=9, loc="left")
    figure.colorbar(image, ax=axes, label="DME weight", shrink=0.8)
    figure.suptitle("Which backbone each word relied on (DME fusion weights)")
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)


__all__ = [
    "BACKBONE_LABELS",
    "check_remote_code_reload",
    "format_weight_table",
    "plot_word_weights",
    "word_weights",
]
