"""Checkpoints saved by the v0.1 release still load and compute exactly what v0.1 computed.

The fixtures in `tests/fixtures/checkpoints_v0_1/` were written by the v0.1 code (commit c611b91) with
`tests/fixtures/make_v0_1_checkpoints.py`; each holds the saved model and processor (with v0.1's remote-code files),
`inputs.json` (the class that saved it and the raw input) and `expected.safetensors` (v0.1's outputs and processor
tensors). Here the current library loads each one through its own classes and the Auto classes, and the v0.1 code
shipped inside each folder loads it as remote code in a Python where `hf_metaembed` cannot be imported.

Paths in the saved `.json` files are written as `{FIXTURES}/...` (see the generator); every checkpoint is copied to a
temporary folder with the placeholder replaced by the real fixtures path before it is loaded.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from remote_code import BLOCK_HF_METAEMBED
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoProcessor,
)

from hf_metaembed import (
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedModel,
    MetaEmbedProcessor,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints_v0_1"
PLACEHOLDER = "{FIXTURES}"
CHECKPOINTS = sorted(path.name for path in FIXTURES.iterdir() if (path / "inputs.json").is_file())
CLASSES = {
    "MetaEmbedModel": (MetaEmbedModel, AutoModel),
    "MetaEmbedForSequenceClassification": (MetaEmbedForSequenceClassification, AutoModelForSequenceClassification),
    "MetaEmbedForTokenClassification": (MetaEmbedForTokenClassification, AutoModelForTokenClassification),
}
INPUT_FIELDS = ("sequences", "ligand", "receptor")
ATOL, RTOL = 1e-6, 1e-6


def read_inputs(name: str) -> dict:
    return json.loads((FIXTURES / name / "inputs.json").read_text(encoding="utf-8"))


def processor_input(record: dict) -> dict:
    """The keyword arguments the processor was called with: `sequences`, or `ligand` and `receptor`."""
    return {field: record[field] for field in INPUT_FIELDS if field in record}


def check_against_expected(name: str, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], where: str):
    """Every stored tensor (model outputs and `inputs.*` processor tensors) is reproduced by `got`."""
    missing = sorted(set(expected) - set(got))
    assert not missing, f"{name} ({where}): no {missing} in the outputs (have {sorted(got)})"
    for key, value in expected.items():
        torch.testing.assert_close(
            got[key], value, atol=ATOL, rtol=RTOL, msg=lambda msg, key=key: f"{name} ({where}) {key}: {msg}"
        )


def outputs_by_name(batch, outputs) -> dict[str, torch.Tensor]:
    """As the generator stores them: model output tensors by name, processor tensors as `inputs.<name>`."""
    tensors = {key: value for key, value in outputs.items() if isinstance(value, torch.Tensor)}
    tensors.update({f"inputs.{key}": value for key, value in batch.items() if isinstance(value, torch.Tensor)})
    return tensors


def test_fixtures_cover_every_class_architecture_head_and_fusion():
    """The fixture set is the one the generator promises (a lost or renamed folder would shrink coverage silently)."""
    manifest = json.loads((FIXTURES / "MANIFEST.json").read_text(encoding="utf-8"))
    assert CHECKPOINTS == sorted(manifest["checkpoints"])
    records = [read_inputs(name) for name in CHECKPOINTS]
    settings = [record["settings"] for record in records]
    assert {record["class"] for record in records} == set(CLASSES)
    assert {s["architecture"] for s in settings} == {"single", "sc", "ec", "hp", "pad"}
    assert {s.get("head", "linear") for s in settings} == {"linear", "mlp", "convbert"}
    assert {s.get("fusion", "dme") for s in settings} == {"concat", "mean", "dme", "cdme", "attention"}
    assert any(s.get("level") == "sequence" for s in settings)
    assert any("mix" in s.get("layers", []) for s in settings)
    assert any(s.get("window_size") for s in settings)
    assert any(not record["save_backbone_weights"] for record in records)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> Path:
    """Every checkpoint copied to a temporary folder with `{FIXTURES}` in its `.json` files made absolute."""
    root = tmp_path_factory.mktemp("checkpoints_v0_1")
    for name in CHECKPOINTS:
        folder = shutil.copytree(FIXTURES / name, root / name)
        for path in Path(folder).rglob("*.json"):
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace(PLACEHOLDER, str(FIXTURES)), encoding="utf-8")
    return root


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_current_library_loads_v0_1_checkpoint(resolved, name):
    record = read_inputs(name)
    folder = resolved / name
    expected = load_file(str(FIXTURES / name / "expected.safetensors"))
    model_class, auto_class = CLASSES[record["class"]]
    assert auto_class.__name__ == record["auto_class"]

    processor = MetaEmbedProcessor.from_pretrained(folder)
    auto_processor = AutoProcessor.from_pretrained(folder)
    assert type(auto_processor) is MetaEmbedProcessor
    with torch.no_grad():
        for where, proc in (("MetaEmbedProcessor", processor), ("AutoProcessor", auto_processor)):
            batch = proc(**processor_input(record))
            inputs = {key: value for key, value in expected.items() if key.startswith("inputs.")}
            check_against_expected(name, inputs, outputs_by_name(batch, {}), where)

        model = model_class.from_pretrained(folder).eval()
        check_against_expected(name, expected, outputs_by_name(batch, model(**batch)), model_class.__name__)
        auto = auto_class.from_pretrained(folder).eval()
        assert type(auto) is model_class
        check_against_expected(name, expected, outputs_by_name(batch, auto(**batch)), auto_class.__name__)
        if model_class is not MetaEmbedModel and "pooler_output" in expected:
            # a head checkpoint also loads as the bare model (the `metaembed.` prefix stripped)
            base = AutoModel.from_pretrained(folder).eval()
            assert type(base) is MetaEmbedModel
            torch.testing.assert_close(base(**batch).pooler_output, expected["pooler_output"], atol=ATOL, rtol=RTOL)
    frozen = [
        key
        for key, p in model.named_parameters()
        if p.requires_grad and any(part.startswith("backbone_") for part in key.split("."))
    ]
    assert not frozen, f"{name}: backbones not frozen after loading: {frozen[:3]}"


REMOTE_SCRIPT = BLOCK_HF_METAEMBED + textwrap.dedent(
    """
    try:
        import hf_metaembed  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("hf_metaembed should not be importable here")

    import json
    from pathlib import Path

    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoProcessor

    torch.set_num_threads(1)
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    for name in json.loads(sys.argv[3]):
        record = json.loads((root / name / "inputs.json").read_text(encoding="utf-8"))
        processor = AutoProcessor.from_pretrained(root / name, trust_remote_code=True)
        assert "hf_metaembed" not in type(processor).__module__, type(processor).__module__
        batch = processor(**{k: record[k] for k in ("sequences", "ligand", "receptor") if k in record})
        auto_class = getattr(transformers, record["auto_class"])
        model = auto_class.from_pretrained(root / name, trust_remote_code=True).eval()
        assert type(model).__name__ == record["class"], (name, type(model).__name__)
        assert "hf_metaembed" not in type(model).__module__, type(model).__module__
        with torch.no_grad():
            outputs = model(**batch)
        tensors = {k: v for k, v in outputs.items() if isinstance(v, torch.Tensor)}
        tensors.update({f"inputs.{k}": v for k, v in batch.items() if isinstance(v, torch.Tensor)})
        save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(out / f"{name}.safetensors"))
    """
)


@pytest.fixture(scope="module")
def remote_outputs(resolved, tmp_path_factory) -> Path:
    """Run one Python without `hf_metaembed` that loads every checkpoint as remote code and saves its outputs."""
    work = tmp_path_factory.mktemp("remote_v0_1")
    script = work / "remote.py"
    script.write_text(REMOTE_SCRIPT, encoding="utf-8")
    out = work / "out"
    out.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work / "modules"), TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, str(script), str(resolved), str(out), json.dumps(CHECKPOINTS)],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_v0_1_checkpoint_loads_as_remote_code_without_the_library(remote_outputs, name):
    expected = load_file(str(FIXTURES / name / "expected.safetensors"))
    remote = load_file(str(remote_outputs / f"{name}.safetensors"))
    check_against_expected(name, expected, remote, "remote code")


# ------------------------------------------------------------------ the last 0.1.x code (config format 2)

V0_1_X = Path(__file__).resolve().parent / "fixtures" / "checkpoints_v0_1_x"


@pytest.mark.parametrize("name", sorted(path.name for path in V0_1_X.iterdir() if path.is_dir()))
def test_checkpoints_of_the_last_0_1_x_code_reproduce_their_outputs(name):
    """Saved by commit 90b09b9 (tests/fixtures/make_v0_1_x_checkpoints.py): the reading stage's weights under their
    old keys, ConvBERT run inside the EC pairing; 0.2 computes the same outputs to 1e-6."""
    folder = V0_1_X / name
    inputs = json.loads((folder / "inputs.json").read_text(encoding="utf-8"))
    model = MetaEmbedForSequenceClassification.from_pretrained(folder).eval()
    processor = MetaEmbedProcessor.from_pretrained(folder)
    if inputs["architecture"] == "single":
        batch = processor(inputs["sequences"])
    else:
        batch = processor(ligand=inputs["ligand"], receptor=inputs["receptor"])
    with torch.no_grad():
        outputs = model(**batch)
    expected = load_file(folder / "expected.safetensors")
    assert set(expected) >= {"logits", "pooler_output", "fusion_weights"}
    for key, value in expected.items():
        torch.testing.assert_close(outputs[key], value, atol=1e-6, rtol=0, msg=f"{name}: {key}")
    if name == "single_mix_layer":
        assert model.metaembed.reader.layer_mixes["0"].layer_scores.abs().sum() > 0  # loaded, not re-initialised
