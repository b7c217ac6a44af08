"""Errors of the feature cache; each is a `ValueError` whose message says what went wrong and what to do."""


class FeatureCacheError(ValueError):
    """A feature cache that cannot be built or used as asked; the message says why and what to do."""


class UncacheableModelError(FeatureCacheError):
    """The model's backbone states change during training, so they cannot be cached."""


class CacheFingerprintError(FeatureCacheError):
    """The cache was built for another model, backbone, layer selection, dtype or tokenizer."""


class CorruptShardError(FeatureCacheError):
    """A shard is missing, truncated or altered (its checksum differs from the one in the index)."""


class MissingSegmentError(FeatureCacheError):
    """A sample needs a segment that the cache does not hold."""


__all__ = [
    "CacheFingerprintError",
    "CorruptShardError",
    "FeatureCacheError",
    "MissingSegmentError",
    "UncacheableModelError",
]
