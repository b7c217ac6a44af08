"""Training from a cache: `CachedFeatureDataset` (one item per sample) and `CachedFeatureCollator` (model inputs)."""

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from .errors import MissingSegmentError
from .segments import sample_segments, segment_key
from .store import FeatureCache


class CachedFeatureDataset(Dataset):
    """A dataset of cached backbone states, one item per sample, for `Trainer` or a `DataLoader`.

    Each item is `{"backbone_states": [[(units, d_i) per backbone] per segment], "segment_side_index": [side per
    segment], "labels": label}`; batch items with `CachedFeatureCollator`. Every needed segment is looked up at
    construction, so a sample the cache lacks is reported before training starts.
    """

    def __init__(
        self,
        cache: FeatureCache,
        *,
        sequences: Sequence[str] | None = None,
        ligand: Sequence[Sequence[str]] | None = None,
        receptor: Sequence[Sequence[str]] | None = None,
        labels: Sequence | torch.Tensor | None = None,
        architecture: str = "single",
    ) -> None:
        self.cache = cache
        self.architecture = architecture
        unit_types = cache.unit_types
        self.samples = [
            [(side, segment_key(chains, unit_types)) for side, chains in segments]
            for segments in sample_segments(architecture, sequences, ligand, receptor)
        ]
        if labels is not None and len(labels) != len(self.samples):
            raise ValueError(f"{len(labels)} labels for {len(self.samples)} samples; give one label per sample")
        self.labels = labels
        absent = [i for i, segments in enumerate(self.samples) if any(key not in cache for _, key in segments)]
        if absent:
            raise MissingSegmentError(
                f"{len(absent)} samples (first: {absent[:5]}) need segments the cache at {cache.path} does not hold; "
                f"build it over these samples with build_feature_cache(..., architecture={architecture!r})"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        item = {
            "backbone_states": [self.cache[key] for _, key in self.samples[index]],
            "segment_side_index": [side for side, _ in self.samples[index]],
        }
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


class CachedFeatureCollator:
    """Pad `CachedFeatureDataset` items into model inputs.

    Returns `backbone_states` (per backbone `(segments, units, d_i)`, zero-padded), `unit_mask (segments, units)`,
    `segment_sample_index` and `segment_side_index (segments,)` and, when items carry them, `labels` (`(samples,)`
    or `(samples, num_labels)`; with `per_unit_labels=True`, `(samples, units)` padded with -100).
    """

    def __init__(self, per_unit_labels: bool = False) -> None:
        self.per_unit_labels = per_unit_labels

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        segments = [segment for feature in features for segment in feature["backbone_states"]]
        lengths = torch.tensor([segment[0].shape[0] for segment in segments])
        states = [pad_sequence(list(per_backbone), batch_first=True) for per_backbone in zip(*segments)]
        units = states[0].shape[1]
        batch = {
            "backbone_states": states,
            "unit_mask": (torch.arange(units).unsqueeze(0) < lengths.unsqueeze(1)).long(),
            "segment_sample_index": torch.tensor(
                [i for i, feature in enumerate(features) for _ in feature["backbone_states"]], dtype=torch.long
            ),
            "segment_side_index": torch.tensor(
                [side for feature in features for side in feature["segment_side_index"]], dtype=torch.long
            ),
        }
        if "labels" in features[0]:
            labels = [feature["labels"] for feature in features]
            if self.per_unit_labels:
                padded = torch.full((len(labels), units), -100, dtype=torch.long)
                for row, values in enumerate(labels):
                    padded[row, : len(values)] = torch.as_tensor(values, dtype=torch.long)
                batch["labels"] = padded
            else:
                batch["labels"] = torch.stack([torch.as_tensor(label) for label in labels])
        return batch


__all__ = ["CachedFeatureCollator", "CachedFeatureDataset"]
