"""`hf-metaembed fit-fusion`: fit from a sequence file or a feature cache, save, reload."""

import json

import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.cache import build_feature_cache
from hf_metaembed.cli.main import main

PROTEINS = ["MKTAYIAKQRQISFVK", "GSHMVLSPADKTNVKAAW", "MVLSGEDKSNIKAAWGKIGGHG", "MKVLA"]


def write_fasta(path):
    path.write_text("".join(f">p{i}\n{p}\n" for i, p in enumerate(PROTEINS)))
    return path


def test_fit_fusion_from_a_sequence_file_saves_a_fitted_model(tiny_esm, tiny_prott5, tmp_path, capsys):
    fasta = write_fasta(tmp_path / "proteins.fasta")
    out = tmp_path / "fitted"
    code = main(
        ["fit-fusion", str(fasta), "--backbones", f"{tiny_esm},{tiny_prott5}", "--fusion", "pca", "--dim", "5"]
        + ["--output-dir", str(out), "--max-vectors", "40"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["fusion"] == "pca" and report["vectors"] == 40
    model = MetaEmbedModel.from_pretrained(out)
    assert model.config.fusion_fitted and model.fusion.encoder.shape == (5, 32)
    assert torch.isfinite(model.fusion.encoder).all() and model.fusion.source_mean.abs().sum() > 0
    processor = MetaEmbedProcessor.from_pretrained(out)
    assert model(**processor(PROTEINS[:1])).last_hidden_state.shape == (1, len(PROTEINS[0]), 5)


def test_fit_fusion_from_a_cache_folder(tiny_esm, tiny_prott5, tmp_path, capsys):
    backbones = f"{tiny_esm},{tiny_prott5}"
    reader = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], fusion="concat")
    processor = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5])
    build_feature_cache(reader, processor, tmp_path / "cache", sequences=PROTEINS, progress=False)
    code = main(
        ["fit-fusion", str(tmp_path / "cache"), "--backbones", backbones, "--fusion", "lle", "--dim", "3"]
        + ["--neighbors", "4", "--anchors", "30", "--output-dir", str(tmp_path / "lle")]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["fusion"] == "lle" and report["anchors"] == 30
    assert MetaEmbedModel.from_pretrained(tmp_path / "lle").fusion.anchors.shape == (30, 32)


def test_fit_fusion_names_the_fitted_choices(tiny_esm, tiny_prott5, tmp_path, capsys):
    fasta = write_fasta(tmp_path / "proteins.fasta")
    code = main(["fit-fusion", str(fasta), "--backbones", tiny_esm, "--fusion", "dme", "--output-dir", str(tmp_path)])
    assert code != 0
    assert "--fusion dme: not a fitted fusion; choose one of: svd, pca, 1ton" in capsys.readouterr().err
