"""Datasets of protein complexes: the PPB-Affinity loader and its curation, and identity-aware splits.

Not model code: nothing in `hf_metaembed.modeling` imports it.
"""

from .clustering import mmseqs_binary
from .ppb_affinity import (
    AMINO_ACIDS,
    DUPLICATE_RULES,
    LABEL_TRANSFORMS,
    METHOD_PRIORITY,
    BadRowError,
    ComplexDataset,
    ComplexRecord,
    CurationReport,
    load_ppb_affinity,
)
from .splits import SPLIT_METHODS, IdentitySplit, identity_split
from .tables import TableError, read_table

__all__ = [
    "AMINO_ACIDS",
    "DUPLICATE_RULES",
    "LABEL_TRANSFORMS",
    "METHOD_PRIORITY",
    "SPLIT_METHODS",
    "BadRowError",
    "ComplexDataset",
    "ComplexRecord",
    "CurationReport",
    "IdentitySplit",
    "TableError",
    "identity_split",
    "load_ppb_affinity",
    "mmseqs_binary",
    "read_table",
]
