"""`hf-metaembed embed --precision`: quantised embeddings with stored calibration ranges."""

import numpy as np
import pytest

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.cli.main import main
from hf_metaembed.compact import CalibrationRanges, quantize_embeddings

PROTEINS = ["MKTAYIAKQRQISFVK", "GSHMVLSPADKTNVKAAW", "MVLSGEDKSNIKAAWGKIGGHG", "MKVLA"]


@pytest.fixture(scope="module")
def saved(tiny_esm, tiny_prott5, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], fusion="concat").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5]).save_pretrained(folder)
    fasta = folder / "proteins.fasta"
    fasta.write_text("".join(f">p{i}\n{p}\n" for i, p in enumerate(PROTEINS)))
    return folder, fasta


def embed(fasta, folder, output, *extra) -> int:
    return main(["embed", str(fasta), "--model", str(folder), "-o", str(output), "--no-progress", *extra])


def test_int8_output_uses_and_stores_its_calibration_ranges(saved, tmp_path):
    folder, fasta = saved
    assert embed(fasta, folder, tmp_path / "float.npy") == 0
    assert embed(fasta, folder, tmp_path / "codes.npy", "--precision", "int8") == 0
    floats, codes = np.load(tmp_path / "float.npy"), np.load(tmp_path / "codes.npy")
    assert floats.dtype == np.float32 and codes.dtype == np.int8 and codes.shape == floats.shape
    ranges = CalibrationRanges.load(tmp_path / "codes.npy.calibration.json")
    np.testing.assert_array_equal(codes, quantize_embeddings(floats, "int8", ranges=ranges)[0])
    np.testing.assert_allclose(ranges.minimum, floats.min(0))
    # a later run quantises with the stored ranges
    assert (
        embed(
            fasta,
            folder,
            tmp_path / "again.npy",
            "--precision",
            "int8",
            "--calibration-ranges",
            str(tmp_path / "codes.npy.calibration.json"),
        )
        == 0
    )
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), codes)


def test_ubinary_npz_packs_bits(saved, tmp_path):
    folder, fasta = saved
    assert embed(fasta, folder, tmp_path / "float.npz") == 0
    assert embed(fasta, folder, tmp_path / "bits.npz", "--precision", "ubinary") == 0
    floats, bits = np.load(tmp_path / "float.npz"), np.load(tmp_path / "bits.npz")
    assert bits["embeddings"].dtype == np.uint8 and bits["embeddings"].shape == (4, 4)  # 32 dims -> 4 bytes
    np.testing.assert_array_equal(bits["embeddings"], np.packbits(floats["embeddings"] > 0, axis=-1))
    np.testing.assert_array_equal(bits["ids"], floats["ids"])


def test_precision_needs_a_file_output(saved, tmp_path, capsys):
    folder, fasta = saved
    assert embed(fasta, folder, tmp_path / "shards", "--precision", "binary") != 0
    assert "needs a .npy or .npz output" in capsys.readouterr().err
