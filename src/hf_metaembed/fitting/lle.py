"""Fitting the locally linear meta-embedding (`lle`, Bollegala, Hayashi & Kawarabayashi 2018): a uniform sample of
anchor units (reservoir sampling over one streamed pass), their reconstruction weights shared across sources
(`lle_weights`, each anchor rebuilt from other anchors), then the meta-embeddings M (A, k) as the eigenvectors of
(I - W)^T (I - W) with the smallest eigenvalues after the constant one, scaled so M^T M = A I. Cost grows with the
anchors (A^2 distances, an A x A eigenproblem), not with the size of the data, beyond the one sampling pass.
Not model code.
"""

import math

import torch

from ..modeling.fitted_fusion import normalize_sources
from ..modeling.fitted_lle import LocallyLinearFusion, lle_weights
from .rows import UnitRows


def sample_anchors(rows: UnitRows, count: int, normalize: bool, seed: int) -> torch.Tensor:
    """`count` rows (normalised, concatenated: `(count, D)`) drawn uniformly from one pass (fewer if the data holds
    fewer), in the order they were seen."""
    generator = torch.Generator().manual_seed(seed)
    reservoir: torch.Tensor | None = None
    positions = torch.empty(0, dtype=torch.long)
    seen = 0
    for batch in rows.batches():
        x = torch.cat(normalize_sources(batch, normalize), dim=-1)
        index = torch.arange(seen, seen + len(x))
        free = count - len(positions)
        if free > 0:  # the first `count` rows fill the reservoir
            taken = x[:free]
            reservoir = taken.clone() if reservoir is None else torch.cat([reservoir, taken])
            positions = torch.cat([positions, index[:free]])
            x, index = x[free:], index[free:]
        # Algorithm R: the row at `position` replaces a uniform slot of [0, position] when that slot is a real one
        slots = (torch.rand(len(x), generator=generator, dtype=torch.float64) * (index + 1)).long()
        for row in (slots < count).nonzero().flatten().tolist():  # in order, so a later row overwrites
            reservoir[slots[row]], positions[slots[row]] = x[row], index[row]
        seen += len(batch[0])
    if reservoir is None:
        raise ValueError(f"no vectors to fit on in {rows.description}")
    return reservoir[torch.argsort(positions)]


def embed_anchors(anchors: list[torch.Tensor], k: int, neighbors: int, regularization: float) -> torch.Tensor:
    """Meta-embeddings `(A, k)` of the anchors (per source `(A, d_i)`) preserving their shared local weights."""
    count = anchors[0].shape[0]
    if count < k + 2 or count <= neighbors:
        raise ValueError(
            f"lle needs more anchors than fusion_dim + 1 and lle_neighbors; the sample has {count} vectors for "
            f"fusion_dim={k}, lle_neighbors={neighbors}: fit on more data or lower them"
        )
    rows = [a.double() for a in anchors]
    indices, weights = lle_weights(rows, rows, neighbors, regularization, exclude_self=True)
    matrix = torch.zeros(count, count, dtype=torch.float64)
    matrix.scatter_add_(1, indices, weights)
    residual = torch.eye(count, dtype=torch.float64) - matrix
    values, vectors = torch.linalg.eigh(residual.T @ residual)
    return (vectors[:, 1 : k + 1] * math.sqrt(count)).float()


def fit_lle(fusion: LocallyLinearFusion, rows: UnitRows, seed: int = 0) -> dict[str, torch.Tensor]:
    """Anchors and their meta-embeddings for `fusion` (its `anchor_count` anchors at most)."""
    anchors = sample_anchors(rows, fusion.anchor_count, fusion.normalize, seed)
    split = list(anchors.split(fusion.input_dims, dim=1))
    embeddings = embed_anchors(split, fusion.dim, fusion.neighbors, fusion.regularization)
    return {"anchors": anchors.float(), "anchor_embeddings": embeddings}
