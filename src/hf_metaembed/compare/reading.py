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
    and the cache's summary with the forward counts (`backbone_forward_calls`, `backbone_segments_read`); `code_dir`
    holds the code of the backbones that ship their own (`backbone_<i>_code/`, None when none does), from which the
    cells rebuild them."""

    config: dict
    hidden_states: list[int]
    summary: dict
    code_dir: str | None = None


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
    trusted: list[bool] | None = None,
    code_dir: str | os.PathLike | None = None,
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
        trusted: per backbone, whether its own modelling code may run (`backbone_trust_remote_code`).
        code_dir: where the code of the trusted backbones that ship their own is copied (`save_own_code`).

    Raises:
        ValueError: the backbones cannot be loaded, a layer index does not exist in a backbone, or the data cannot
            be read by them (e.g. too long without `truncation`).
    """
    from ..cache import build_feature_cache
    from ..modeling.configuration_metaembed import backbone_num_layers
    from ..modeling.modeling_metaembed import MetaEmbedModel
    from ..modeling.processing_metaembed import MetaEmbedProcessor

    stacked = list(layers) != ["last"]
    trust = {"backbone_trust_remote_code": list(trusted or [False] * len(backbones))}
    settings = {"layers": ["mix" if stacked else "last"] * len(backbones), **(reader_settings or {}), **trust}
    try:
        reader = MetaEmbedModel.from_backbones(list(backbones), **settings)
    except OSError as error:
        raise ValueError(f"cannot load the backbones: {error}") from None
    hidden_states = [backbone_num_layers(reader.config.get_backbone_config(i)) + 1 for i in range(len(backbones))]
    check_layer_ranges(list(layers), hidden_states, list(names))
    options = {"truncation": True} if truncation else {}
    processor = MetaEmbedProcessor.from_backbones(list(backbones), **options, **trust)
    code_dir = save_own_code(reader, code_dir)
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
    return Reading(reader.config.to_dict(), hidden_states, summary, code_dir)


def save_own_code(reader, code_dir: str | os.PathLike | None) -> str | None:
    """Copy the code files of every backbone of `reader` that runs its own code into `code_dir/backbone_<i>_code/`
    (as `save_pretrained` lays them out beside a model) and record their digest and names in the backbone's record,
    so a model built from `reader.config` with `code_dir` as its `name_or_path` rebuilds those backbones from that
    copy, checked against the digest (`build_stored_backbone`). Returns `code_dir`, or None when no backbone runs its
    own code."""
    from ..modeling.remote_code_backbones import runs_own_code

    if not any(runs_own_code(record) for record in reader.config.backbones):
        return None
    if code_dir is None:
        raise ValueError("backbones with their own code need a code_dir to copy their code to, for the cells")
    reader.save_own_backbone_code(str(code_dir))
    return str(code_dir)


__all__ = ["Reading", "read_backbones_once", "save_own_code"]
