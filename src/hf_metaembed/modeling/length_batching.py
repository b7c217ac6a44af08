"""Length-aware batching, the part the saved model's own code needs (its pipelines batch with it): plan token-budget
batches of samples sorted by length, and move a batch to its device.

Samples are sorted longest first and cut into batches whose *padded* token count (segments times the longest segment)
stays within a budget for every backbone, each backbone counted with its own tokenizer, so short sequences travel in
large batches and long ones in small ones; peak memory follows the budget, not the longest sequence times the batch
size. A sample longer than the budget runs alone. The tools outside the model (`hf-metaembed embed`, the cache build,
the demo, evaluation) use the same functions through `hf_metaembed.batching`.

Model code (copied next to a saved model for `trust_remote_code`): imports torch and its siblings only.
"""

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .feature_rows import feature_rows, sample_segments

# Padded tokens per backbone pass. Chosen by measurement (benchmarks/RESULTS.md, "Throughput of hf-metaembed embed"):
# on 2 CPU threads, an ESM-2-8M-shaped backbone over 400 proteins of 30-1000 residues runs as fast at 2,048 as at
# 4,096-16,384, while peak memory grows with the budget (about 70 kB per token for that backbone). On a GPU, raise it
# until memory is full.
DEFAULT_MAX_TOKENS = 2048

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def token_budgets(max_tokens: int | Sequence[int], num_backbones: int) -> tuple[int, ...]:
    """One token budget per backbone: `max_tokens` for each, or a list with one value per backbone.

    Raises:
        ValueError: a budget that is not a positive integer, or a list of the wrong length.
    """
    values = [max_tokens] * num_backbones if isinstance(max_tokens, int) else list(max_tokens)
    if len(values) != num_backbones:
        raise ValueError(
            f"max_tokens lists {len(values)} budgets for {num_backbones} backbones; give one number for all of them "
            "or one per backbone"
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_tokens must be a positive number of tokens, got {value!r}")
    return tuple(values)


def sample_token_lengths(row: Mapping, index: int = 0) -> tuple[int, tuple[int, ...]]:
    """`(segments, longest segment's tokens per backbone)` of one sample in any per-sample form the processor writes
    (see `feature_rows`): the padded tokens it adds to a batch are its segments times the batch's longest."""
    segments = [segment["input_ids"] for segment in sample_segments(row, index)]
    return len(segments), tuple(max(len(ids) for ids in backbone) for backbone in zip(*segments))


def plan_batches(
    lengths: Sequence[int | Sequence[int]],
    max_tokens: int | Sequence[int] = DEFAULT_MAX_TOKENS,
    max_batch_size: int | None = None,
    segments: Sequence[int] | None = None,
) -> list[list[int]]:
    """Token-budget batches of input positions, longest inputs first.

    Args:
        lengths: per sample its token count, or one count per backbone (its longest segment's, for samples of
            several segments).
        max_tokens: padded tokens allowed per batch, for every backbone or one value per backbone.
        max_batch_size: at most this many samples per batch (None: no bound besides the budget).
        segments: per sample its number of segments (default 1 each); a batch's padded tokens per backbone are its
            segments times its longest segment.

    Returns:
        Batches as lists of positions into `lengths`. Every position appears once; the plan depends only on the
        arguments (ties keep input order), so every process of a multi-process run computes the same plan.
    """
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be a positive number of samples, got {max_batch_size!r}")
    rows = [(length,) if isinstance(length, int) else tuple(length) for length in lengths]
    if not rows:
        return []
    budgets = token_budgets(max_tokens, len(rows[0]))
    counts = [1] * len(rows) if segments is None else list(segments)
    if len(counts) != len(rows):
        raise ValueError(f"segments lists {len(counts)} samples but lengths lists {len(rows)}")
    # a sample's share of each budget: the backbone it fills most decides its place in the order
    order = sorted(range(len(rows)), key=lambda i: (-max(n / b for n, b in zip(rows[i], budgets)), i))
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = [0] * len(budgets)
    segment_count = 0
    for position in order:
        grown = [max(old, new) for old, new in zip(longest, rows[position])]
        grown_count = segment_count + counts[position]
        over_budget = any(grown_count * length > budget for length, budget in zip(grown, budgets))
        if batch and (over_budget or (max_batch_size is not None and len(batch) >= max_batch_size)):
            batches.append(batch)
            batch, grown, grown_count = [], list(rows[position]), counts[position]
        batch.append(position)
        longest, segment_count = grown, grown_count
    batches.append(batch)
    return batches


def feature_lengths(rows: Sequence[Mapping]) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Per sample, its segment count and its tokens per backbone (`sample_token_lengths`), as two tuples."""
    if not rows:
        return (), ()
    return tuple(zip(*(sample_token_lengths(row, index) for index, row in enumerate(rows))))


def run_in_input_order(
    features: Sequence[Mapping],
    run_batch: Callable[[list[Mapping]], Sequence[Any]],
    max_tokens: int | Sequence[int] = DEFAULT_MAX_TOKENS,
    max_batch_size: int | None = None,
) -> list[Any]:
    """`run_batch` over token-budget batches of processor features; its per-sample results in input order (the one
    implementation: the tools, the pipelines and the server use it).

    Args:
        features: per-sample features from `MetaEmbedProcessor(..., return_tensors=None)` (see `feature_rows`).
        run_batch: takes a list of features, returns one result per feature, in that order.
        max_tokens, max_batch_size: as `plan_batches`.
    """
    features = feature_rows(features)
    counts, lengths = feature_lengths(features)
    results: list[Any] = [None] * len(features)
    for batch in plan_batches(lengths, max_tokens, max_batch_size, counts):
        outputs = run_batch([features[i] for i in batch])
        if len(outputs) != len(batch):
            raise ValueError(f"run_batch returned {len(outputs)} results for a batch of {len(batch)} samples")
        for position, output in zip(batch, outputs):
            results[position] = output
    return results


def padded_tokens(batch: Sequence[int], lengths: Sequence[Sequence[int]], segments: Sequence[int] | None = None):
    """Per backbone, the padded token count of `batch` (its segments times its longest segment)."""
    count = len(batch) if segments is None else sum(segments[i] for i in batch)
    return tuple(count * max(column) for column in zip(*(lengths[i] for i in batch)))


# ---------------------------------------------------------------------------------------------- running a batch


def move_to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The tensors of `batch` on `device`; for a CUDA device they are pinned first and copied without blocking, so
    the copy overlaps the previous batch's kernels. Values that are not tensors are kept as they are."""
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    moved = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor):
            if on_gpu and value.device.type == "cpu":
                value = value.pin_memory()
            value = value.to(device, non_blocking=on_gpu)
        moved[name] = value
    return moved


def check_autocast(precision: str | None) -> str | None:
    """`precision` after checking it names an autocast dtype (`"bf16"`, `"fp16"`) or is None/`"fp32"` (no
    autocast, returned as None)."""
    if precision in (None, "fp32", "none"):
        return None
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(
            f"unknown autocast precision {precision!r}; choose one of: fp32, {', '.join(AUTOCAST_DTYPES)}"
        )
    return precision


def autocast(device: torch.device | str, precision: str | None) -> contextlib.AbstractContextManager:
    """`torch.autocast` on `device` in `precision` (`"bf16"`, `"fp16"`), or a no-op context for None/`"fp32"`.

    Matrix products and attention run in the lower precision; outputs are cast back to float32 by the callers that
    store them."""
    precision = check_autocast(precision)
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AUTOCAST_DTYPES[precision])


__all__ = [
    "AUTOCAST_DTYPES",
    "DEFAULT_MAX_TOKENS",
    "autocast",
    "check_autocast",
    "feature_lengths",
    "move_to_device",
    "padded_tokens",
    "plan_batches",
    "run_in_input_order",
    "sample_token_lengths",
    "token_budgets",
]
