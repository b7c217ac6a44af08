"""Every processor setting can be set when loading a saved processor and for a single call, and bad values say the
choices."""

import pytest
import torch
from transformers import AutoProcessor

from hf_metaembed import MetaEmbedProcessor

SETTINGS = {
    "unknown_residues": "x",
    "per_unit_labels": True,
    "long_sequences": "window",
    "truncation": True,
    "architecture": "hp",
}


@pytest.fixture(scope="module")
def saved(tiny_esm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("processor")
    MetaEmbedProcessor.from_backbones([tiny_esm]).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("loader", ["MetaEmbedProcessor", "AutoProcessor"])
def test_from_pretrained_overrides_every_saved_setting(saved, loader):
    load = MetaEmbedProcessor.from_pretrained if loader == "MetaEmbedProcessor" else AutoProcessor.from_pretrained
    default = load(saved)
    assert {name: getattr(default, name) for name in SETTINGS} == {
        "unknown_residues": "error",
        "per_unit_labels": False,
        "long_sequences": "error",
        "truncation": False,
        "architecture": "single",
    }
    for name, value in SETTINGS.items():
        assert getattr(load(saved, **{name: value}), name) == value, name
    processor = load(saved, unknown_residues="x")
    with pytest.warns(UserWarning, match="2 non-amino-acid characters were read as X"):
        batch = processor(["MKT1A2"])
    assert batch["unit_mask"].sum() == 6


def test_from_pretrained_rejects_bad_values_and_unknown_arguments(saved):
    with pytest.raises(ValueError, match="unknown unknown_residues 'skip'; choose one of: error, x"):
        MetaEmbedProcessor.from_pretrained(saved, unknown_residues="skip")
    with pytest.raises(ValueError, match="unknown per_unit_labels 'yes'"):
        MetaEmbedProcessor.from_pretrained(saved, per_unit_labels="yes")
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['unknown_residue'\].*unknown_residues"):
        MetaEmbedProcessor.from_pretrained(saved, unknown_residue="x")


def test_every_setting_applies_to_one_call_only(saved, tiny_esm):
    processor = MetaEmbedProcessor.from_pretrained(saved)
    with pytest.raises(ValueError, match="not amino-acid letters"):
        processor(["MKT1A"])
    with pytest.warns(UserWarning, match="1 non-amino-acid characters were read as X"):
        assert processor(["MKT1A"], unknown_residues="x")["unit_mask"].sum() == 5
    with pytest.raises(ValueError, match="not amino-acid letters"):
        processor(["MKT1A"])  # the processor's own setting is untouched

    limit = processor.max_lengths[0]
    long = "M" * (limit + 5)
    with pytest.raises(ValueError, match=f"accepts at most {limit} tokens"):
        processor([long])
    assert processor([long], long_sequences="window")["unit_mask"].sum() == limit + 5
    with pytest.warns(UserWarning, match="truncation cut"):
        assert processor([long], truncation=True)["attention_mask"].sum() == limit

    pairs = processor(ligand=[["MKTA", "GSH"]], receptor=[["WWPP"]], architecture="hp")
    assert pairs["segment_sample_index"].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="unknown architecture 'hpp'"):
        processor(["MKT"], architecture="hpp")

    labels = [[0, 1, 0, 1], [1, 0, 1, 0]]
    assert processor(["MKTA", "GSHM"], labels=labels)["labels"].dtype == torch.long
    with pytest.raises(ValueError, match="sample 1 of this batch has 4 labels for 3 units"):
        processor(["MKTA", "GSH"], labels=labels, per_unit_labels=True)
    rows = processor(["MKTA", "GSHM"], labels=[[0, 1, 0], [1, 0, 1]], return_tensors=None)
    with pytest.raises(ValueError, match="sample 0 of this batch has 3 labels for 4 units"):
        processor.pad(rows, per_unit_labels=True)
    assert processor.pad(rows)["labels"].shape == (2, 3)  # one row of 3 targets per sample


def test_encode_segment_takes_the_same_options(saved):
    processor = MetaEmbedProcessor.from_pretrained(saved)
    stats = {}
    segment = processor.encode_segment(["MKT1"], unknown_residues="x", stats=stats)
    assert segment["num_units"] == 4 and stats == {"mapped_to_x": 1}
    with pytest.warns(UserWarning, match="truncation cut 2 units"):
        processor(["MKTAYI"], truncation=True, max_length=6)
