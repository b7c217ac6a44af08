"""Length-aware batching: the one place where the tools (`hf-metaembed embed`, the cache build, the pipelines, the
demo, evaluation) decide which sequences share a backbone pass, and how a batch reaches the device.

Batches are cut from inputs sorted by length, longest first, and bounded by a token budget: a batch's *padded* token
count (its segments times its longest segment) stays within `max_tokens` for every backbone, each backbone counted
with its own tokenizer (ProtT5 and ESM-2 add different special tokens; text backbones split words differently), so
short sequences travel in large batches, long ones in small batches, and peak memory follows the budget rather than
the longest sequence times the batch size. A sample longer than the budget runs alone. `max_batch_size` bounds the
number of samples as well. Callers keep their output in input order (`run_in_input_order` does it for them).

    rows = feature_rows(processor(sequences, return_tensors=None))
    plan = plan_batches([sample_token_lengths(row)[1] for row in rows], max_tokens=4096)
    for batch in plan:                                # lists of input positions, longest inputs first
        inputs = move_to_device(processor.pad([rows[i] for i in batch]), device)

The planner itself lives with the model code (`modeling/length_batching.py`), so a saved model's pipelines batch the
same way where this library is not installed. Not model code: the model files never import this module.
"""

from collections.abc import Iterator, Mapping, Sequence

import torch

from .modeling.feature_rows import feature_rows
from .modeling.length_batching import (
    AUTOCAST_DTYPES,
    DEFAULT_MAX_TOKENS,
    autocast,
    check_autocast,
    feature_lengths,
    move_to_device,
    padded_tokens,
    plan_batches,
    run_in_input_order,
    sample_token_lengths,
    token_budgets,
)


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
        """The sampler for per-sample processor features (see `feature_rows`)."""
        counts, lengths = feature_lengths(feature_rows(features))
        return cls(lengths, segments=counts, **kwargs)

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(batch) for batch in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


__all__ = [
    "AUTOCAST_DTYPES",
    "DEFAULT_MAX_TOKENS",
    "TokenBudgetBatchSampler",
    "autocast",
    "check_autocast",
    "feature_rows",
    "move_to_device",
    "padded_tokens",
    "plan_batches",
    "run_in_input_order",
    "sample_token_lengths",
    "token_budgets",
]
