"""Long segments: run a backbone on overlapping windows of units and stitch its token states back together.

A backbone accepts a bounded number of tokens (ESM-2: 1022 residues plus <cls> and <eos>). With a window policy in
the config (`window_size`, `window_overlap`, `window_combine`), every segment with more units than `window_size` is cut
into windows of `window_size` units that overlap by `window_overlap` units; each window gets the backbone's own special
tokens (the prefix and suffix the processor put around the whole segment: <cls>/<eos>, [CLS]/[SEP], </s>), all windows
of the batch run through the backbone as one batch, and the states of each original token are combined over the
windows that contain it. A segment that fits in one window is read exactly as without windows.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, the standard library and its sibling
files only.
"""

from collections.abc import Callable

import torch
from torch import nn

from .backbone_families import backbone_family

WINDOW_COMBINES = ("center", "mean", "first")


def check_window_policy(window_size, window_overlap, window_combine: str, num_backbones: int) -> None:
    """Raise a `ValueError` naming the field, the bad value and the fix for an impossible window policy."""
    if window_combine not in WINDOW_COMBINES:
        raise ValueError(f"unknown window_combine {window_combine!r}; choose one of: {', '.join(WINDOW_COMBINES)}")
    if window_size is None:
        if window_overlap not in (None, 0):
            raise ValueError(
                f"window_overlap={window_overlap} needs a window_size; set window_size or drop the overlap"
            )
        return
    sizes = window_size if isinstance(window_size, list | tuple) else [window_size] * num_backbones
    if len(sizes) != num_backbones:
        raise ValueError(
            f"window_size lists {len(sizes)} entries for {num_backbones} backbones; give one per backbone"
        )
    for index, size in enumerate(sizes):
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(
                f"window_size of backbone {index} must be a positive number of units or None, got {size!r}"
            )
        overlap = size // 4 if window_overlap is None else window_overlap
        if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < size:
            raise ValueError(
                f"window_overlap must be a whole number of units from 0 to window_size - 1 = {size - 1} "
                f"(backbone {index}), got {window_overlap!r}"
            )


def backbone_window(config, index: int) -> tuple[int, int] | None:
    """`(window units, overlap units)` for backbone `index`, or None when it reads whole segments."""
    size = config.window_size
    if isinstance(size, list | tuple):
        size = size[index]
    if size is None:
        return None
    overlap = size // 4 if config.window_overlap is None else config.window_overlap
    return size, overlap


def position_limit(backbone: nn.Module) -> int | None:
    """Most tokens a backbone reads: the rows of a learned absolute position table (RoBERTa and ESM-1b tables start
    after the padding index, as their position ids do), else the config's `max_position_embeddings` (rotary ESM-2
    runs past it, but was trained within it) where its family record says that bounds it (`absolute_positions`);
    None when the backbone states no limit (relative T5)."""
    embeddings = getattr(backbone, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if isinstance(table, nn.Embedding):
        padding_idx = getattr(embeddings, "padding_idx", None)
        return table.num_embeddings - (padding_idx + 1 if isinstance(padding_idx, int) else 0)
    config = getattr(backbone, "config", None)
    if not backbone_family(getattr(config, "model_type", None)).absolute_positions:
        return None
    limit = getattr(config, "max_position_embeddings", None)
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def check_backbone_inputs(
    backbone: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    index: int,
    name: str | None,
    windowed: bool = False,
) -> None:
    """Token ids outside a backbone's vocabulary, or more tokens than its position table holds, raise a `ValueError`
    naming the backbone and the segment instead of an index error inside the embedding layer.

    Args:
        input_ids, attention_mask: `(segments, tokens)` of one backbone.
        windowed: the backbone reads windows (`windowed_token_states` checks their length instead).
    """
    label = f"backbone {index}" + (f" ({name})" if name else "")
    try:
        vocab = getattr(backbone.get_input_embeddings(), "num_embeddings", None)
    except (AttributeError, NotImplementedError):  # an encoder without a token embedding table
        vocab = None
    if vocab is not None and input_ids.numel():
        real = attention_mask.bool()
        bad = real & ((input_ids < 0) | (input_ids >= vocab))
        if bool(bad.any()):
            segment = int(bad.any(dim=1).nonzero()[0])
            value = int(input_ids[segment][bad[segment]][0])
            raise ValueError(
                f"segment {segment}: token id {value} is outside the vocabulary of {label} ({vocab} tokens); "
                "make the inputs with this model's MetaEmbedProcessor"
            )
    limit = None if windowed else position_limit(backbone)
    if limit is not None and attention_mask.shape[1] > limit:
        lengths = attention_mask.sum(dim=1)
        if bool((lengths > limit).any()):
            segment = int((lengths > limit).nonzero()[0])
            raise ValueError(
                f"segment {segment}: {label} reads at most {limit} tokens, this one has {int(lengths[segment])}; "
                "set a sliding-window policy (MetaEmbedConfig window_size, with MetaEmbedProcessor("
                "long_sequences='window')) or a smaller window_size"
            )


def plan_windows(
    token_unit_index: torch.Tensor, attention_mask: torch.Tensor, window_size: int, window_overlap: int
) -> dict[str, torch.Tensor]:
    """Where every window of every segment starts and ends, in units and in tokens.

    Args:
        token_unit_index: `(segments, tokens)` unit of each token, -1 for special tokens, separators and padding.
        attention_mask: `(segments, tokens)`.

    Returns:
        Per window `(windows,)`: `segment`, unit range `unit_start`/`unit_end`, body token range `token_start`/
        `token_end` (the window's units, and any separator between them); per segment `(segments,)`: `units`,
        `body_start`/`body_end` (the tokens between the prefix and the suffix of special tokens) and `length`.
        Also `running_unit (segments, tokens)`: the last unit at or before each token (-1 before the first unit).
    """
    segments, tokens = token_unit_index.shape
    device = token_unit_index.device
    real = attention_mask.bool()
    unit_index = torch.where(real, token_unit_index, -1)
    is_unit = unit_index >= 0
    positions = torch.arange(tokens, device=device).expand(segments, tokens)
    length = real.sum(dim=1)
    units = unit_index.amax(dim=1).clamp(min=-1) + 1
    # the body runs from the first to the last unit token; a segment without units is all prefix
    body_start = torch.where(is_unit, positions, tokens).amin(dim=1)
    body_end = torch.where(is_unit, positions + 1, 0).amax(dim=1)
    empty = units == 0
    body_start = torch.where(empty, length, body_start)
    body_end = torch.where(empty, length, body_end)

    stride = window_size - window_overlap
    extra = (units - window_size).clamp(min=0)
    counts = 1 + torch.div(extra + stride - 1, stride, rounding_mode="floor")  # windows per segment
    segment = torch.repeat_interleave(torch.arange(segments, device=device), counts)
    first_window = torch.cumsum(counts, dim=0) - counts
    rank = torch.arange(segment.shape[0], device=device) - first_window[segment]
    # the last window is aligned to the end of the segment, so every window holds window_size units
    unit_start = torch.minimum(rank * stride, extra[segment])
    unit_end = torch.minimum(unit_start + window_size, units[segment])

    # token ranges: first token of a unit >= start, and the token after the last unit token < end
    running_unit = torch.cummax(unit_index, dim=1).values
    big = torch.iinfo(unit_index.dtype).max
    later_unit = torch.where(is_unit, unit_index, big).flip(1).cummin(dim=1).values.flip(1)
    token_start = torch.searchsorted(running_unit[segment], unit_start.unsqueeze(1)).squeeze(1)
    token_end = torch.searchsorted(later_unit[segment], unit_end.unsqueeze(1)).squeeze(1)
    token_start = torch.maximum(token_start, body_start[segment])
    token_end = torch.maximum(torch.minimum(token_end, body_end[segment]), token_start)
    return {
        "segment": segment,
        "unit_start": unit_start,
        "unit_end": unit_end,
        "token_start": token_start,
        "token_end": token_end,
        "units": units,
        "body_start": body_start,
        "body_end": body_end,
        "length": length,
        "running_unit": running_unit,
    }


def windowed_token_states(
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_unit_index: torch.Tensor,
    window_size: int,
    window_overlap: int,
    combine: str = "center",
    pad_token_id: int = 0,
    token_limit: int | None = None,
    backbone_label: str = "the backbone",
) -> torch.Tensor:
    """Token states of one backbone over segments of any length, read through sliding windows of units.

    Args:
        run: `run(input_ids (windows, tokens), attention_mask (windows, tokens)) -> (windows, tokens, *feature)`,
            the backbone with its layer selection.
        input_ids, attention_mask, token_unit_index: `(segments, tokens)` of this backbone, as the processor made
            them (special tokens around the whole segment).
        window_size, window_overlap: in units (residues or words).
        combine: how a token seen by several windows gets its state: `"center"` from the window where it sits
            farthest from a cut edge, `"mean"` averaged over those windows, `"first"` from the first of them.
        pad_token_id: the backbone's padding id, for window rows shorter than the longest window.
        token_limit: the most tokens one window may hold (None: no check).
        backbone_label: how error messages name the backbone.

    Returns:
        `(segments, tokens, *feature)`: one state per original token (zero at padding), so unit alignment and pooling
        work as without windows.
    """
    if combine not in WINDOW_COMBINES:
        raise ValueError(f"unknown window_combine {combine!r}; choose one of: {', '.join(WINDOW_COMBINES)}")
    plan = plan_windows(token_unit_index, attention_mask, window_size, window_overlap)
    segments, tokens = input_ids.shape
    device = input_ids.device
    segment = plan["segment"]
    windows = segment.shape[0]
    prefix = plan["body_start"][segment]  # (windows,)
    suffix = (plan["length"] - plan["body_end"])[segment]
    body = plan["token_end"] - plan["token_start"]
    window_length = prefix + body + suffix
    longest = int(window_length.max())
    if token_limit is not None and longest > token_limit:
        worst = int(window_length.argmax())
        worst_units = int(plan["unit_end"][worst] - plan["unit_start"][worst])
        raise ValueError(
            f"segment {int(segment[worst])}: a window of {worst_units} units needs {longest} tokens with its special "
            f"tokens, but {backbone_label} reads at most {token_limit}; lower window_size"
        )

    # where each window token comes from in its segment: prefix, then the window's body, then the suffix
    column = torch.arange(longest, device=device).expand(windows, longest)
    prefix_, body_, start_ = prefix.unsqueeze(1), body.unsqueeze(1), plan["token_start"].unsqueeze(1)
    in_prefix = column < prefix_
    in_body = ~in_prefix & (column < prefix_ + body_)
    valid = column < window_length.unsqueeze(1)
    suffix_source = plan["body_end"][segment].unsqueeze(1) + column - prefix_ - body_
    source = torch.where(in_prefix, column, torch.where(in_body, start_ + column - prefix_, suffix_source))
    source = torch.where(valid, source, 0).clamp(max=tokens - 1)
    rows = segment.unsqueeze(1).expand(windows, longest)
    window_ids = torch.where(valid, input_ids[rows, source], pad_token_id)
    window_mask = valid.to(attention_mask.dtype)
    window_states = run(window_ids, window_mask)  # (windows, longest, *feature)

    # which window a token takes its state from: highest score, ties to the earliest window
    units = plan["units"][segment].unsqueeze(1)
    unit_start, unit_end = plan["unit_start"].unsqueeze(1), plan["unit_end"].unsqueeze(1)
    far = tokens + 1  # "no cut edge on this side"
    if combine == "center":
        position = plan["running_unit"][rows, source]
        left = torch.where(unit_start > 0, position - unit_start, far)
        right = torch.where(unit_end < units, unit_end - 1 - position, far)
        in_suffix = valid & ~in_prefix & ~in_body
        score = torch.where(in_body, torch.minimum(left, right), 0)
        score = torch.where(in_prefix & (unit_start == 0), far, score)
        score = torch.where(in_suffix & (unit_end == units), far, score)
    else:
        score = torch.zeros_like(column)
    target = torch.where(valid, rows * tokens + source, segments * tokens)  # padding goes to a spare slot
    if combine == "mean":
        weight = valid.to(window_states.dtype)
    else:
        order = torch.arange(windows, device=device).unsqueeze(1)
        key = score * (windows + 1) + (windows - order)
        key = torch.where(valid, key, -1)
        best = torch.full((segments * tokens + 1,), -1, dtype=key.dtype, device=device)
        best = best.scatter_reduce(0, target.flatten(), key.flatten(), reduce="amax")
        weight = (valid & (key == best[target])).to(window_states.dtype)

    feature_shape = window_states.shape[2:]
    target, weight = target.to(window_states.device), weight.to(window_states.device)
    flat = window_states.reshape(windows * longest, -1) * weight.reshape(-1, 1)
    sums = flat.new_zeros(segments * tokens + 1, flat.shape[1]).index_add_(0, target.flatten(), flat)
    totals = weight.new_zeros(segments * tokens + 1).index_add_(0, target.flatten(), weight.flatten())
    stitched = sums[:-1] / totals[:-1].clamp(min=1).unsqueeze(1)
    return stitched.reshape(segments, tokens, *feature_shape)


__all__ = [
    "WINDOW_COMBINES",
    "backbone_window",
    "check_backbone_inputs",
    "check_window_policy",
    "plan_windows",
    "position_limit",
    "windowed_token_states",
]
