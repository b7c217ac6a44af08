"""Quantised embeddings: `int8`, `uint8` (scalar quantisation with per-dimension calibration ranges), `binary`,
`ubinary` (one bit per dimension, packed 8 to a byte), beside `float32`, as sentence-transformers'
`quantize_embeddings` defines them.

- int8 / uint8: with a calibration set's per-dimension minimum lo and maximum hi, step = (hi - lo) / 255 and
  q = round((x - lo) / step) (uint8, clipped to 0..255), or that minus 128 (int8, -128..127). The ranges are stored
  (`CalibrationRanges.save`, a JSON file) so the same embedding always gets the same code; `dequantize` maps codes
  back to lo + q step (the bucket's lower edge, at most one step off).
- ubinary: bit = x > 0, packed with `numpy.packbits` (width / 8 bytes, the width padded up to a multiple of 8);
  binary: the same bytes minus 128, as int8. Compared by Hamming distance (`binary_similarity`).

Not model code.
"""

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
RANGES_FILE = "calibration_ranges.json"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    return precision


@dataclasses.dataclass
class CalibrationRanges:
    """Per-dimension `minimum` and `maximum` of a calibration set of embeddings, for int8/uint8."""

    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def from_embeddings(cls, embeddings) -> "CalibrationRanges":
        values = np.asarray(embeddings, dtype=np.float32)
        if values.ndim != 2 or len(values) < 2:
            raise ValueError(
                f"calibration needs a 2-D array of at least 2 embeddings (vectors, width), got shape {values.shape}"
            )
        return cls(values.min(axis=0), values.max(axis=0))

    @property
    def width(self) -> int:
        return len(self.minimum)

    def save(self, path: str | os.PathLike) -> None:
        """Write the ranges as JSON (a folder gets `calibration_ranges.json`)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, RANGES_FILE)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"minimum": self.minimum.tolist(), "maximum": self.maximum.tolist()}, handle)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationRanges":
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, RANGES_FILE)
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
        return cls(np.asarray(stored["minimum"], dtype=np.float32), np.asarray(stored["maximum"], dtype=np.float32))

    def steps(self) -> np.ndarray:
        return np.maximum(self.maximum - self.minimum, np.finfo(np.float32).tiny) / 255.0


def quantize_embeddings(
    embeddings, precision: str, ranges: CalibrationRanges | None = None, calibration=None
) -> tuple[np.ndarray, CalibrationRanges | None]:
    """Quantise `(vectors, width)` embeddings to `precision`.

    int8/uint8 take `ranges`, or compute them from `calibration` embeddings, or (last resort) from `embeddings`
    themselves; the ranges used are returned so they can be stored and reused for later embeddings.

    Returns:
        `(codes, ranges)`: float32 `(vectors, width)`, int8/uint8 `(vectors, width)`, binary (int8) / ubinary
        (uint8) `(vectors, ceil(width / 8))`; ranges are None for the other precisions.
    """
    check_precision(precision)
    values = np.asarray(embeddings, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (vectors, width), got shape {values.shape}")
    if precision == "float32":
        return values, None
    if precision in ("binary", "ubinary"):
        packed = np.packbits(values > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed, None
    if ranges is None:
        ranges = CalibrationRanges.from_embeddings(values if calibration is None else calibration)
    if ranges.width != values.shape[1]:
        raise ValueError(
            f"the calibration ranges are for width {ranges.width}, the embeddings have width {values.shape[1]}; "
            "calibrate on embeddings of this model (and this truncate_dim)"
        )
    codes = np.clip(np.rint((values - ranges.minimum) / ranges.steps()), 0, 255)
    if precision == "uint8":
        return codes.astype(np.uint8), ranges
    return (codes - 128).astype(np.int8), ranges


def dequantize_embeddings(codes, precision: str, ranges: CalibrationRanges | None = None, width: int | None = None):
    """float32 approximations of quantised embeddings: lo + q step (int8/uint8), +-1 per bit (binary/ubinary, cut
    to `width` when given)."""
    check_precision(precision)
    codes = np.asarray(codes)
    if precision == "float32":
        return codes.astype(np.float32)
    if precision in ("binary", "ubinary"):
        packed = (codes.astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else codes
        bits = np.unpackbits(packed, axis=-1)[:, :width]
        return bits.astype(np.float32) * 2 - 1
    if ranges is None:
        raise ValueError(f"{precision} codes need the calibration ranges they were made with to be dequantised")
    offset = 128 if precision == "int8" else 0
    return ranges.minimum + (codes.astype(np.float32) + offset) * ranges.steps()


def binary_similarity(query_codes, corpus_codes, precision: str = "ubinary") -> np.ndarray:
    """Negative Hamming distance `(queries, corpus)` between packed binary codes (higher is more similar)."""
    as_bytes = [
        (np.asarray(c).astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else np.asarray(c)
        for c in (query_codes, corpus_codes)
    ]
    bits = [np.unpackbits(c, axis=-1).astype(np.int32) for c in as_bytes]
    differing = bits[0].sum(1, keepdims=True) + bits[1].sum(1) - 2 * bits[0] @ bits[1].T
    return -differing


def retrieval_quality(
    embeddings, relevant: Sequence[int], queries, precisions: Sequence[str] = PRECISIONS, calibration=None
) -> dict[str, float]:
    """How much retrieval quality each precision keeps: for each query, is its relevant corpus item the nearest
    one (top-1 accuracy) under cosine similarity of dequantised codes (Hamming distance for binary codes)?

    Args:
        embeddings: corpus `(items, width)`.
        relevant: for each query, the index of its relevant corpus item.
        queries: `(queries, width)`.
        calibration: embeddings to calibrate int8/uint8 on (default: the corpus).
    """
    corpus = np.asarray(embeddings, dtype=np.float32)
    query = np.asarray(queries, dtype=np.float32)
    target = np.asarray(relevant)
    scores = {}
    for precision in precisions:
        if precision in ("binary", "ubinary"):
            similarity = binary_similarity(
                quantize_embeddings(query, precision)[0], quantize_embeddings(corpus, precision)[0], precision
            )
        else:
            corpus_codes, ranges = quantize_embeddings(corpus, precision, calibration=calibration)
            query_codes, _ = quantize_embeddings(query, precision, ranges=ranges)
            a = dequantize_embeddings(query_codes, precision, ranges)
            b = dequantize_embeddings(corpus_codes, precision, ranges)
            a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
            b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
            similarity = a @ b.T
        scores[precision] = float((similarity.argmax(axis=1) == target).mean())
    return scores
