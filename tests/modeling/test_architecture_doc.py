"""The worked example of docs/architecture.md runs as written: one class registers a pooling that the config, the
model and `list_poolings()` then know."""

import re
from pathlib import Path

import pytest
import torch

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor, list_poolings
from hf_metaembed.modeling.pooling import POOLERS

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture
def rms_pooling():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # the documented snippet, verbatim
    yield namespace["RootMeanSquarePooler"]
    POOLERS.pop("rms")


def test_the_documented_pooling_registers_and_runs_end_to_end(rms_pooling, tiny_esm):
    assert "rms" in list_poolings()
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_esm], pooling="rms", num_labels=1).eval()
    assert isinstance(model.metaembed.pairing.pooler, rms_pooling)
    batch = MetaEmbedProcessor.from_backbones([tiny_esm])(["MKTAYIAK", "GSH"])
    with torch.no_grad():
        out = model.metaembed(**batch)
    units = out.last_hidden_state[1][batch["unit_mask"][1].bool()]
    torch.testing.assert_close(out.pooler_output[1], units.pow(2).mean(dim=0).sqrt(), atol=1e-6, rtol=0)
