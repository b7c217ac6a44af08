"""Where fitting data comes from: unit states of every backbone, as batches of rows `[(rows, d_i) per backbone]`.

A `UnitRows` can be iterated several times (the randomised SVD and the autoencoders take several passes); each pass
yields the same rows in the same order. Three kinds of source:

- a feature cache (`hf_metaembed.cache.FeatureCache`, or the path of one): every cached segment's real units;
- sequences run through the model's frozen backbones batch by batch (streamed: nothing is kept between batches);
- in-memory arrays, one `(vectors, d_i)` per backbone (tensors or numpy arrays).

Not model code.
"""

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..batching import DEFAULT_MAX_TOKENS, feature_rows, plan_batches, sample_token_lengths
from ..cache import FeatureCache
from ..cache.store import INDEX_NAME

Rows = list[torch.Tensor]


def _check_layers(model) -> None:
    layers = list(model.config.backbone_layers)
    if "mix" in layers:
        index = layers.index("mix")
        raise ValueError(
            f"backbone {index} reads a learned 'mix' of its layers, whose weights are trained with the task: a fitted "
            "fusion is fitted on fixed features; give that backbone one layer (layers=[..., -1, ...]) to fit it"
        )


class UnitRows:
    """Re-iterable batches of unit rows: `for rows in source.batches(): rows[i]` is `(n_rows, d_i)`, float32.

    `max_vectors` stops every pass after that many rows (the first ones, in the source's order).
    """

    def __init__(self, batches_fn, dims: list[int], max_vectors: int | None = None, description: str = "") -> None:
        if max_vectors is not None and max_vectors < 1:
            raise ValueError(f"max_vectors must be a positive integer, got {max_vectors}")
        self._batches_fn = batches_fn
        self.dims = list(dims)
        self.max_vectors = max_vectors
        self.description = description

    def batches(self) -> Iterator[Rows]:
        seen = 0
        for rows in self._batches_fn():
            if not len(rows[0]):
                continue
            if self.max_vectors is not None:
                rows = [r[: self.max_vectors - seen] for r in rows]
            yield [r.float() for r in rows]
            seen += len(rows[0])
            if self.max_vectors is not None and seen >= self.max_vectors:
                return

    def __iter__(self) -> Iterator[Rows]:
        return self.batches()

    @classmethod
    def from_arrays(cls, arrays: Sequence, batch_rows: int = 4096, max_vectors: int | None = None) -> "UnitRows":
        """Per backbone `(vectors, d_i)`; row r of every array describes the same unit."""
        tensors = [torch.as_tensor(a, dtype=torch.float32) for a in arrays]
        if not tensors or any(t.ndim != 2 for t in tensors):
            raise ValueError("give one 2-D array (vectors, d_i) per backbone")
        counts = {len(t) for t in tensors}
        if len(counts) != 1:
            raise ValueError(f"the arrays hold different numbers of vectors ({sorted(counts)}); give one row per unit")

        def batches():
            for start in range(0, len(tensors[0]), batch_rows):
                yield [t[start : start + batch_rows] for t in tensors]

        return cls(batches, [t.shape[1] for t in tensors], max_vectors, f"{len(tensors[0])} in-memory vectors")

    @classmethod
    def from_cache(cls, cache, batch_rows: int = 4096, max_vectors: int | None = None) -> "UnitRows":
        """Every real unit of every cached segment (a cache built with a 'mix' layer is refused)."""
        if not isinstance(cache, FeatureCache):
            cache = FeatureCache(cache)
        keys = sorted(cache.keys())
        if not keys:
            raise ValueError(f"the feature cache at {cache.path} holds no segments; build it over your data first")
        first = cache[keys[0]]
        if any(state.ndim != 2 for state in first):
            raise ValueError(
                f"the feature cache at {cache.path} stores every layer of a 'mix' backbone; a fitted fusion is fitted "
                "on one layer per backbone: build the cache with one layer each"
            )

        def batches():
            pending: list[Rows] = []
            count = 0
            for key in keys:
                pending.append(cache[key])
                count += pending[-1][0].shape[0]
                if count >= batch_rows:
                    yield [torch.cat(parts) for parts in zip(*pending)]
                    pending, count = [], 0
            if pending:
                yield [torch.cat(parts) for parts in zip(*pending)]

        return cls(batches, [s.shape[-1] for s in first], max_vectors, f"feature cache {cache.path}")

    @classmethod
    def from_sequences(
        cls,
        model,
        processor,
        sequences: Sequence[str],
        batch_size: int = 32,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_vectors: int | None = None,
    ) -> "UnitRows":
        """The units of `sequences` read by the model's reading stage (`model.reader`: frozen backbones, layer
        choice, alignment; one vector per segment at `level="sequence"`), batch by batch (longest first within a
        token budget, as everywhere in the library); states are not kept between batches."""
        from .._utils import metaembed_of

        base = metaembed_of(model)
        _check_layers(base)
        texts = list(sequences)
        if not texts:
            raise ValueError("no sequences to fit on")

        def batches():
            features = feature_rows(processor(texts, return_tensors=None))
            lengths = [sample_token_lengths(row, index)[1] for index, row in enumerate(features)]
            base.eval()
            for rows in plan_batches(lengths, max_tokens, batch_size):
                batch = processor.pad([features[i] for i in rows])
                with torch.inference_mode():  # the reading stage: states as fusion receives them
                    reading = base.reader(
                        base.backbones,
                        batch["input_ids"],
                        batch["attention_mask"],
                        batch["token_unit_index"],
                        batch["unit_mask"],
                    )
                real = reading.unit_mask.bool()
                yield [s[real.to(s.device)].cpu() for s in reading.states]

        return cls(batches, base.config.backbone_hidden_sizes, max_vectors, f"{len(texts)} sequences")


def is_cache_folder(path) -> bool:
    """True for a folder holding a feature cache's index."""
    return isinstance(path, str | os.PathLike) and (Path(path) / INDEX_NAME).is_file()


def unit_rows(source, model=None, processor=None, batch_rows: int = 4096, max_vectors: int | None = None) -> UnitRows:
    """A `UnitRows` from any supported source (see the module docstring)."""
    if isinstance(source, UnitRows):
        return source
    if isinstance(source, FeatureCache) or is_cache_folder(source):
        return UnitRows.from_cache(source, batch_rows, max_vectors)
    if isinstance(source, str | os.PathLike):
        raise ValueError(
            f"{os.fspath(source)!r} is not a feature cache folder (no {INDEX_NAME}); pass a cache, a list of "
            "sequences (with the processor), or one array per backbone"
        )
    items = list(source)
    if items and all(isinstance(item, str) for item in items):
        if model is None or processor is None:
            raise ValueError("fitting on sequences runs the backbones: pass the model and its processor")
        return UnitRows.from_sequences(model, processor, items, max_vectors=max_vectors)
    return UnitRows.from_arrays(items, batch_rows, max_vectors)
