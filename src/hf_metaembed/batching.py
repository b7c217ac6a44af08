"""Length-aware batching: the one place where the tools (embed, cache build, pipeline, demo, evaluation) decide which
sequences share a backbone pass, and how a batch reaches the device.

Batches are cut from inputs sorted by length, longest first, and bounded by a token budget: a batch's *padded* token
count (its segments times its longest segment) stays within `max_tokens` for every backbone, each backbone counted
with its own tokenizer (ProtT5 and ESM-2 add different special tokens; text backbones split words differently), so
short sequences travel in large batches, long ones in small batches, and peak memory follows the budget rather than
the longest sequence times the batch size. A sample longer than the budget runs alone. `max_batch_size` bounds the
number of samples as well. Callers keep their output in input order (`run_in_input_order` does it for them).

    plan = plan_batches([sample_token_lengths(f) for f in features], max_tokens=4096)
    for batch in plan:                                # lists of input positions, longest inputs first
        inputs = move_to_device(processor.pad([features[i] for i in batch]), device)

Not model code: the model files never import it.
"""

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

# Padded tokens per backbone pass. Measured on 2 CPU threads with an ESM-2-8M-shaped backbone over 400 proteins of
# 30-1000 residues: 2,048 to 8,192 are within a few percent of each other; larger budgets gain nothing on CPU and
# cost memory (benchmarks/RESULTS.md, "Embedding throughput"). On a GPU, raise it until memory is full.
DEFAULT_MAX_TOKENS = 4096

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


def sample_rows(features: Sequence[Mapping] | Mapping) -> list[Mapping]:
    """One mapping per sample from processor features: a list of per-sample rows, or a mapping of columns with one
    entry per sample (what `MetaEmbedProcessor(..., return_tensors=None)` returns)."""
    if isinstance(features, Mapping):
        columns = dict(features)
        count = len(next(iter(columns.values()), []))
        return [{key: value[index] for key, value in columns.items()} for index in range(count)]
    return list(features)


def sample_token_lengths(feature: Mapping) -> tuple[int, tuple[int, ...]]:
    """`(segments, longest segment's tokens per backbone)` of one sample as the processor encodes it: a row with
    `input_ids` (segments x backbones x token ids), or release 0.1's `{"segments": [{"input_ids": ...}, ...]}`."""
    if "segments" in feature:
        per_segment = [segment["input_ids"] for segment in feature["segments"]]
    else:
        per_segment = feature["input_ids"]
    return len(per_segment), tuple(max(len(ids) for ids in backbone) for backbone in zip(*per_segment))


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


def padded_tokens(batch: Sequence[int], lengths: Sequence[Sequence[int]], segments: Sequence[int] | None = None):
    """Per backbone, the padded token count of `batch` (its segments times its longest segment)."""
    count = len(batch) if segments is None else sum(segments[i] for i in batch)
    return tuple(count * max(column) for column in zip(*(lengths[i] for i in batch)))


def run_in_input_order(
    features: Sequence[Mapping],
    run_batch: Callable[[list[Mapping]], Sequence[Any]],
    max_tokens: int | Sequence[int] = DEFAULT_MAX_TOKENS,
    max_batch_size: int | None = None,
) -> list[Any]:
    """`run_batch` over token-budget batches of processor features; its per-sample results in input order.

    Args:
        features: per-sample features from `MetaEmbedProcessor(..., return_tensors=None)` (see `sample_rows`).
        run_batch: takes a list of features, returns one result per feature, in that order.
        max_tokens, max_batch_size: as `plan_batches`.
    """
    features = sample_rows(features)
    counts, lengths = zip(*(sample_token_lengths(feature) for feature in features)) if features else ((), ())
    results: list[Any] = [None] * len(features)
    for batch in plan_batches(lengths, max_tokens, max_batch_size, counts):
        outputs = run_batch([features[i] for i in batch])
        if len(outputs) != len(batch):
            raise ValueError(f"run_batch returned {len(outputs)} results for a batch of {len(batch)} samples")
        for position, output in zip(batch, outputs):
            results[position] = output
    return results


class TokenBudgetBatchSampler(torch.utils.data.Sampler):
    """A `DataLoader` batch sampler (`DataLoader(dataset, batch_sampler=...)`) over token-budget batches of a dataset
    of processor features, longest first. The batches are the same every epoch: use it for evaluation and
    prediction, where order does not matter to the metrics and padding waste does to the time.

    Args:
        lengths: per sample its token count, or one per backbone (see `plan_batches`); `from_features` reads them.
        max_tokens, max_batch_size, segments: as `plan_batches`.
    """

    def __init__(
        self,
        lengths: Sequence[int | Sequence[int]],
        max_tokens: int | Sequence[int] = DEFAULT_MAX_TOKENS,
        max_batch_size: int | None = None,
        segments: Sequence[int] | None = None,
    ) -> None:
        self.batches = plan_batches(lengths, max_tokens, max_batch_size, segments)

    @classmethod
    def from_features(cls, features: Sequence[Mapping], **kwargs) -> "TokenBudgetBatchSampler":
        """The sampler for per-sample processor features (see `sample_rows`)."""
        features = sample_rows(features)
        counts, lengths = zip(*(sample_token_lengths(feature) for feature in features)) if features else ((), ())
        return cls(lengths, segments=counts, **kwargs)

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(batch) for batch in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


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
    "TokenBudgetBatchSampler",
    "autocast",
    "check_autocast",
    "move_to_device",
    "padded_tokens",
    "plan_batches",
    "run_in_input_order",
    "sample_rows",
    "sample_token_lengths",
    "token_budgets",
]
