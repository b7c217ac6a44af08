"""Frozen backbone-feature cache: states of the backbone-reading stage, computed once and read back each epoch.

Building a cache runs every frozen backbone once over each unique segment of a dataset (deduplicated by content; see
`segments`) and stores its unit-level states exactly as `MetaEmbedModel.compute_backbone_states` returns them (after
layer selection and token-to-unit alignment, before fusion) in safetensors shards (see `store`). An interrupted build
keeps its finished shards and a second call continues where it stopped; shards are read back memory-mapped, so a
cache larger than memory trains fine. A cache is only ever used with the model it was built for (see `fingerprint`).

    cache = build_feature_cache(model, processor, "cache/", ligand=ligands, receptor=receptors, architecture="hp")
    cache = load_feature_cache("cache/", model, processor)       # refuses a cache built for another model
    dataset = CachedFeatureDataset(cache, ligand=ligands, receptor=receptors, labels=labels, architecture="hp")
    loader = DataLoader(dataset, batch_size=8, collate_fn=CachedFeatureCollator())
    for batch in loader:
        loss = model(**batch).loss          # batch holds backbone_states, unit_mask, segment indices, labels

`hf-metaembed cache` (`hf_metaembed.cli.cache`) builds one from a CSV, TSV or JSONL file. Not model code: the model
files never import it.
"""

from .build import build_feature_cache
from .data import CachedFeatureCollator, CachedFeatureDataset
from .errors import (
    CacheFingerprintError,
    CorruptShardError,
    FeatureCacheError,
    MissingSegmentError,
    UncacheableModelError,
)
from .fingerprint import ALIGNMENT_VERSION, cacheable_base_model, fingerprint_differences, model_fingerprint
from .segments import sample_segments, segment_key
from .store import FeatureCache, load_feature_cache

__all__ = [
    "ALIGNMENT_VERSION",
    "CacheFingerprintError",
    "CachedFeatureCollator",
    "CachedFeatureDataset",
    "CorruptShardError",
    "FeatureCache",
    "FeatureCacheError",
    "MissingSegmentError",
    "UncacheableModelError",
    "build_feature_cache",
    "cacheable_base_model",
    "fingerprint_differences",
    "load_feature_cache",
    "model_fingerprint",
    "sample_segments",
    "segment_key",
]
