"""Truncatable and compact embeddings: Matryoshka training over nested prefixes of the pooled embedding, truncation to
a prefix, and quantisation to int8, uint8, binary and ubinary with stored calibration ranges. Not model code."""

from .matryoshka import MatryoshkaLoss, matryoshka_dims, matryoshka_trainer_class, nested_prefix, truncate_embeddings
from .quantization import (
    PRECISIONS,
    CalibrationRanges,
    binary_similarity,
    dequantize_embeddings,
    quantize_embeddings,
    retrieval_quality,
)

__all__ = [
    "PRECISIONS",
    "CalibrationRanges",
    "MatryoshkaLoss",
    "binary_similarity",
    "dequantize_embeddings",
    "matryoshka_dims",
    "matryoshka_trainer_class",
    "nested_prefix",
    "quantize_embeddings",
    "retrieval_quality",
    "truncate_embeddings",
]
