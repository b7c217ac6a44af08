"""A comparison over a backbone that ships its own modelling code (`auto_map` in its config.json): refused before
anything is loaded unless `backbone_trust_remote_code` trusts it, and with it read once, its code copied to
`output_dir/backbone_code/`, from which the cells rebuild it on the meta device (the digest checked)."""

import dataclasses
import shutil

import pytest
import torch
from conftest import polarity_texts

from hf_metaembed.compare import Budget, Comparison, ComparisonError, compare, training
from hf_metaembed.compare.runner import CODE_FOLDER
from hf_metaembed.modeling.remote_code_backbones import RemoteCodeBackboneError, code_sha256
from hf_metaembed.testing import REMOTE_CODE_MODULE, make_tiny_remote_code_backbone

TEXTS, LABELS = polarity_texts(12)
SMALL = {
    "sequences": TEXTS,
    "labels": LABELS,
    "names": ["bert", "own"],
    "fusions": ["concat"],
    "folds": 3,
    "budget": Budget(epochs=2, patience=1, batch_size=8),
    "resamples": 50,
    "permutations": 50,
    "progress": False,
}


@pytest.fixture(scope="module")
def own_code(tmp_path_factory) -> str:
    return make_tiny_remote_code_backbone(tmp_path_factory.mktemp("own_code") / "backbone")


@pytest.mark.parametrize("trust", [False, [True, False]])
def test_an_untrusted_backbone_with_its_own_code_is_refused_before_anything_is_loaded(
    tiny_bert, own_code, tmp_path, monkeypatch, trust
):
    def loading(*args, **kwargs):
        raise AssertionError("a backbone was loaded before the refusal")

    monkeypatch.setattr("hf_metaembed.modeling.modeling_metaembed.MetaEmbedModel.from_backbones", loading)
    message = (
        rf"backbone 1 \({own_code}\) ships its own modelling code \(auto_map \['AutoConfig', 'AutoModel'\] in its "
        r"config.json\).*pass backbone_trust_remote_code=True \(or a list with True at position 1\) to compare"
    )
    settings = {**SMALL, "output_dir": tmp_path / "out"}
    with pytest.raises(ComparisonError, match=message):
        compare([tiny_bert, own_code], backbone_trust_remote_code=trust, **settings)
    assert not (tmp_path / "out").exists()


def test_the_flag_is_checked(tiny_bert, own_code, tmp_path):
    settings = {**SMALL, "output_dir": tmp_path / "out"}
    with pytest.raises(ComparisonError, match=r"list of 2 booleans \(one per backbone\), got \[True\]"):
        Comparison([tiny_bert, own_code], backbone_trust_remote_code=[True], **settings)
    with pytest.raises(ComparisonError, match="to the comparison itself .* not in reader_settings"):
        Comparison([tiny_bert, own_code], reader_settings={"backbone_trust_remote_code": True}, **settings)


def test_a_trusted_backbone_with_its_own_code_is_compared_and_rebuilt_from_the_copied_code(
    tiny_bert, own_code, tmp_path
):
    output = tmp_path / "out"
    result = compare([tiny_bert, own_code], output_dir=output, backbone_trust_remote_code=[False, True], **SMALL)
    assert [(row["cell"], row["fusion"]) for row in result.rows] == [
        ("bert", "alone"),
        ("own", "alone"),
        ("bert + own", "concat"),
    ]
    assert all(0.0 <= row["value"] <= 1.0 for row in result.rows) and not result.skipped
    assert result.summary["cache"]["backbone_segments_read"] == {"bert": len(set(TEXTS)), "own": len(set(TEXTS))}
    assert all(run["backbone_forward_calls"] == 0 for run in result.runs)
    copied = output / CODE_FOLDER / "backbone_1_code"
    assert (copied / f"{REMOTE_CODE_MODULE}.py").is_file() and not (output / CODE_FOLDER / "backbone_0_code").exists()

    # the cells' backbones (this process ran them: jobs=1) were rebuilt from that copy, weightless
    (worker,) = training._WORKERS.values()
    context = worker.context
    assert context.code_dir == str(output / CODE_FOLDER)
    assert context.reader_settings["backbones"][1]["code_sha256"] == code_sha256(copied)
    rebuilt = worker.backbones[1]
    assert type(rebuilt).__name__ == "TinyRemoteModel" and type(worker.backbones[0]).__name__ == "BertModel"
    assert {parameter.device for parameter in rebuilt.parameters()} == {torch.device("meta")}

    # ... and checked against the recorded digest: other code in the copy is refused, naming the backbone
    tampered = tmp_path / "tampered"
    shutil.copytree(output / CODE_FOLDER, tampered)
    with open(tampered / "backbone_1_code" / f"{REMOTE_CODE_MODULE}.py", "a", encoding="utf-8") as handle:
        handle.write("\nCHANGED = True\n")
    with pytest.raises(RemoteCodeBackboneError, match=r"backbone 1 .* is not the code this model was built with"):
        training._Worker(dataclasses.replace(context, code_dir=str(tampered)))
