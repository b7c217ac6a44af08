"""The one read of each backbone in a comparison: load the backbones (no forward pass), check the layer choices
against them, then run each backbone once over every unique segment of the data into the feature cache
(`hf_metaembed.cache.build_feature_cache`), counting every backbone forward pass and the segments it read.

With several layer choices every hidden state is cached (the `"mix"` reading) and each cell takes its own layer from
the stack (`training.cell_layers`); with the default `"last"` only the last layer is. A complete cache is reused as
it is, so a resumed comparison runs no backbone.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .grid import check_layer_ranges


@dataclass
class Reading:
    """What the cells need to know about the read: the reading config, each backbone's number of hidden states,
    and the cache's summary with the forward counts (`backbone_forward_calls`, `backbone_segments_read`)."""

    config: dict
    hidden_states: list[int]
    summary: dict


def _counting_hooks(backbones, calls: list[int], segments: list[int]) -> list:
    """Forward pre-hooks adding one call and the batch's segments to `calls[i]` / `segments[i]` for backbone i."""

    def counter(index):
        def count(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            calls[index] += 1
            segments[index] += int(ids.shape[0]) if ids is not None else 0

        return count

    return [backbone.register_forward_pre_hook(counter(i), with_kwargs=True) for i, backbone in enumerate(backbones)]


def read_backbones_once(
    backbones: Sequence[str],
    names: Sequence[str],
    inputs: dict,
    architectures: Sequence[str],
    layers: Sequence,
    cache_dir: str | os.PathLike,
    reader_settings: dict | None = None,
    truncation: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> Reading:
    """Build (or reuse) the comparison's feature cache; see the module docstring.

    Args:
        backbones: backbone folders or Hub ids; names: how messages and counts name them.
        inputs: `{"sequences": [...]}` or `{"ligand": [...], "receptor": [...]}`.
        architectures: the architectures whose segments to cache.
        layers: the grid's layer choices (already parsed).
        reader_settings: extra `from_backbones` settings (e.g. `unit_types`).

    Raises:
        ValueError: the backbones cannot be loaded, a layer index does not exist in a backbone, or the data cannot
            be read by them (e.g. too long without `truncation`).
    """
    from ..cache import build_feature_cache
    from ..modeling.configuration_metaembed import backbone_num_layers
    from ..modeling.modeling_metaembed import MetaEmbedModel
    from ..modeling.processing_metaembed import MetaEmbedProcessor

    stacked = list(layers) != ["last"]
    settings = {"layers": ["mix" if stacked else "last"] * len(backbones), **(reader_settings or {})}
    try:
        reader = MetaEmbedModel.from_backbones(list(backbones), **settings)
    except OSError as error:
        raise ValueError(f"cannot load the backbones: {error}") from None
    hidden_states = [backbone_num_layers(reader.config.get_backbone_config(i)) + 1 for i in range(len(backbones))]
    check_layer_ranges(list(layers), hidden_states, list(names))
    processor = MetaEmbedProcessor.from_backbones(list(backbones), **({"truncation": True} if truncation else {}))
    if device:
        reader.to(device)
    calls, segments = [0] * len(backbones), [0] * len(backbones)
    hooks = _counting_hooks(reader.backbones, calls, segments)
    try:
        cache = build_feature_cache(
            reader, processor, cache_dir, **inputs, architecture=list(architectures), progress=progress
        )
    finally:
        for hook in hooks:
            hook.remove()
    summary = dict(cache.build_summary or {})
    summary.update(
        path=str(cache_dir),
        backbone_forward_calls=dict(zip(names, calls)),
        backbone_segments_read=dict(zip(names, segments)),
    )
    return Reading(reader.config.to_dict(), hidden_states, summary)


__all__ = ["Reading", "read_backbones_once"]
