"""Fitting the autoencoded meta-embeddings (`daeme`, `caeme`, `aaeme`): mini-batch Adam on each variant's
reconstruction loss (`AutoencodedFusion.objective`, Bollegala & Bao 2018), streamed over the sample for a number of
epochs. The fusion's own buffers are never trained in place: copies are optimised through
`torch.func.functional_call` and loaded at the end. Not model code.
"""

import torch
from torch import nn

from ..modeling.fitted_autoencoded import AutoencodedFusion
from ..modeling.fitted_fusion import normalize_sources
from .rows import UnitRows


class _Objective(nn.Module):
    def __init__(self, fusion: AutoencodedFusion, alignment_weight: float) -> None:
        super().__init__()
        self.fusion = fusion
        self.alignment_weight = alignment_weight

    def forward(self, sources: list[torch.Tensor]) -> torch.Tensor:
        return self.fusion.objective(sources, self.alignment_weight)


def initial_tensors(fusion: AutoencodedFusion, seed: int) -> dict[str, torch.Tensor]:
    """Xavier-uniform weights and zero biases, drawn from a generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in fusion.fitted_shapes().items():
        value = torch.zeros(shape)
        if "weight" in name:
            nn.init.xavier_uniform_(value, generator=generator)
        tensors[name] = value
    return tensors


def fit_autoencoder(
    fusion: AutoencodedFusion,
    rows: UnitRows,
    epochs: int = 10,
    batch_rows: int = 256,
    learning_rate: float = 1e-2,
    alignment_weight: float = 1.0,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Minimise the variant's loss; returns the fitted tensors and the mean loss of every epoch."""
    if epochs < 1 or batch_rows < 1:
        raise ValueError(f"epochs and batch_rows must be positive integers, got {epochs} and {batch_rows}")
    objective = _Objective(fusion, alignment_weight)
    tensors = {f"fusion.{name}": value.requires_grad_() for name, value in initial_tensors(fusion, seed).items()}
    optimizer = torch.optim.Adam(list(tensors.values()), lr=learning_rate)
    history = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for rows_batch in rows.batches():
            sources = normalize_sources(rows_batch, fusion.normalize)
            for start in range(0, len(sources[0]), batch_rows):
                chunk = [s[start : start + batch_rows] for s in sources]
                loss = torch.func.functional_call(objective, tensors, (chunk,), strict=False)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(chunk[0])
                count += len(chunk[0])
        history.append(total / max(count, 1))
    return {name.removeprefix("fusion."): value.detach() for name, value in tensors.items()}, history
