"""Quantised embeddings (issue 19, section 5): int8/uint8 with calibration ranges, binary/ubinary bit packing."""

import numpy as np
import pytest

from hf_metaembed.compact import (
    CalibrationRanges,
    binary_similarity,
    dequantize_embeddings,
    quantize_embeddings,
    retrieval_quality,
)


def test_scalar_quantisation_uses_the_calibration_ranges(tmp_path):
    ranges = CalibrationRanges(np.array([0.0, 0.0], dtype=np.float32), np.array([255.0, 2.55], dtype=np.float32))
    values = np.array([[10.0, 1.0], [300.0, -1.0]], dtype=np.float32)
    codes, used = quantize_embeddings(values, "uint8", ranges=ranges)
    assert used is ranges and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, [[10, 100], [255, 0]])  # (x - lo) / ((hi - lo) / 255), clipped
    signed, _ = quantize_embeddings(values, "int8", ranges=ranges)
    np.testing.assert_array_equal(signed, [[-118, -28], [127, -128]])
    back = dequantize_embeddings(signed, "int8", ranges)
    np.testing.assert_allclose(back[0], [10.0, 1.0], rtol=1e-5)
    ranges.save(tmp_path)
    again, _ = quantize_embeddings(values, "int8", ranges=CalibrationRanges.load(tmp_path))
    np.testing.assert_array_equal(again, signed)


def test_calibration_comes_from_the_calibration_set():
    calibration = np.array([[0.0, 0.0], [2.0, 4.0]])
    codes, ranges = quantize_embeddings(np.array([[0.5, 3.0]]), "uint8", calibration=calibration)
    np.testing.assert_array_equal(ranges.minimum, [0, 0])
    np.testing.assert_array_equal(ranges.maximum, [2, 4])
    np.testing.assert_array_equal(codes, [[64, 191]])  # 0.5 / (2 / 255) = 63.75, 3 / (4 / 255) = 191.25


def test_binary_codes_pack_one_bit_per_dimension():
    values = np.array([[1.0, -1.0, 0.0, 2.0, 0.5, -3.0, 0.1, 0.2, 4.0]])
    ubinary, _ = quantize_embeddings(values, "ubinary")
    assert ubinary.shape == (1, 2) and ubinary.dtype == np.uint8
    np.testing.assert_array_equal(ubinary, [[0b10011011, 0b10000000]])
    binary, _ = quantize_embeddings(values, "binary")
    np.testing.assert_array_equal(binary.astype(int), ubinary.astype(int) - 128)
    np.testing.assert_array_equal(dequantize_embeddings(binary, "binary", width=9), np.where(values > 0, 1.0, -1.0))
    other, _ = quantize_embeddings(-values, "ubinary")
    # -values flips every bit but the zero's (0 > 0 and -0 > 0 are both false): 8 of 9 bits differ
    np.testing.assert_array_equal(binary_similarity(ubinary, np.concatenate([ubinary, other])), [[0, -8]])


def test_retrieval_quality_per_precision():
    generator = np.random.default_rng(0)
    corpus = generator.normal(size=(50, 64)).astype(np.float32)
    queries = corpus[:20] + 0.3 * generator.normal(size=(20, 64)).astype(np.float32)
    scores = retrieval_quality(corpus, list(range(20)), queries)
    assert set(scores) == {"float32", "int8", "uint8", "binary", "ubinary"}
    assert scores["float32"] == 1.0 and scores["int8"] == scores["uint8"] >= 0.95
    assert 0.5 < scores["binary"] == scores["ubinary"] <= scores["float32"]


def test_quantisation_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown precision 'int4'; choose one of: float32, int8, uint8, binary"):
        quantize_embeddings(np.zeros((2, 3)), "int4")
    ranges = CalibrationRanges.from_embeddings(np.array([[0.0, 1.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="ranges are for width 2, the embeddings have width 3"):
        quantize_embeddings(np.zeros((1, 3)), "int8", ranges=ranges)
    with pytest.raises(ValueError, match="need the calibration ranges"):
        dequantize_embeddings(np.zeros((1, 3), dtype=np.int8), "int8")
