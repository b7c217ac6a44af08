"""Locally linear meta-embedding (`lle`): each unit rebuilt from its nearest stored anchors with weights shared across
sources (fitted_fusion.py has the family's notation; `hf_metaembed.fitting` fits it).

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its siblings.
"""

import torch
from transformers import initialization as init

from .fitted_fusion import FittedFusion, _check_positive_int
from .fusion import FUSIONS


def lle_weights(
    query: list[torch.Tensor],
    anchors: list[torch.Tensor],
    neighbors: int,
    regularization: float,
    exclude_self: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Locally linear reconstruction weights shared across sources.

    For each query row, N(u) is the union of its `neighbors` nearest anchors in every source (Euclidean, per
    source; an anchor several sources found keeps its weight on its first copy, the others get 0), and the weights
    minimise sum_i ||s_i(u) - sum_{v in N(u)} w_v s_i(v)||^2 subject to sum_v w_v = 1. Since the squared errors add
    over sources, that is ||x - sum_v w_v x_v||^2 on the concatenation: w = C^-1 1 / (1^T C^-1 1), with the local Gram
    C_vw = (x - x_v).(x - x_w), plus regularization * trace(C) / |N(u)| on the diagonal.

    Args:
        query: per source `(rows, d_i)`.
        anchors: per source `(anchors, d_i)`.
        exclude_self: query row r is anchor r (fitting); it is never its own neighbour.

    Returns:
        `indices (rows, n * neighbors)` into the anchors and `weights (rows, n * neighbors)`, summing to 1 per row.
    """
    found = []
    for q, a in zip(query, anchors):
        distances = torch.cdist(q, a).pow(2)
        if exclude_self:
            distances.fill_diagonal_(float("inf"))
        found.append(distances.topk(neighbors, dim=1, largest=False).indices)
    indices = torch.cat(found, dim=1)  # (rows, n * neighbors)
    x = torch.cat(query, dim=-1)
    differences = x.unsqueeze(1) - torch.cat(anchors, dim=-1)[indices]  # (rows, n * neighbors, D)
    size = indices.shape[1]
    # an anchor found by several sources is one neighbour: its later copies get weight 0
    earlier = torch.ones(size, size, dtype=torch.bool, device=indices.device).tril(-1)
    repeated = ((indices.unsqueeze(2) == indices.unsqueeze(1)) & earlier).any(-1)  # (rows, size)
    live = (~repeated).to(differences.dtype)
    differences = differences * live.unsqueeze(-1)
    gram = differences @ differences.transpose(1, 2)
    live_count = live.sum(-1)
    trace = gram.diagonal(dim1=1, dim2=2).sum(-1)
    ridge = regularization * trace / live_count + torch.finfo(gram.dtype).eps
    eye = torch.eye(size, dtype=gram.dtype, device=gram.device)
    gram = gram + (ridge[:, None] * live + (1 - live)).unsqueeze(-1) * eye
    weights = torch.linalg.solve(gram, live)
    return indices, weights / weights.sum(-1, keepdim=True)


@FUSIONS.register("lle")
class LocallyLinearFusion(FittedFusion):
    """Locally linear meta-embedding (Bollegala, Hayashi & Kawarabayashi, "Think Globally, Embed Locally -- Locally
    Linear Meta-embedding of Words", IJCAI 2018). Fit, on A anchor units (a sample of the fitting data):

    1. reconstruction weights shared across sources: each anchor u from its neighbours N(u) (the union of its
       `lle_neighbors` nearest other anchors in every source), min sum_i ||s_i(u) - sum_v w_uv s_i(v)||^2 with
       sum_v w_uv = 1 (`lle_weights`);
    2. meta-embeddings preserving them: min sum_u ||m_u - sum_v w_uv m_v||^2 with M^T M = A I, solved by the
       eigenvectors of (I - W)^T (I - W) with the k smallest eigenvalues after the constant one.

    Out of sample (the LLE extension of Saul & Roweis 2003): a unit u* gets weights w over its neighbours among the
    stored anchors by step 1 (no exclusion) and m(u*) = sum_v w_v m_v. Stored: the anchors' normalised
    concatenated states (`anchors`, (A, D)) and their meta-embeddings (`anchor_embeddings`, (A, k)). `fusion_weights`
    are the share of |w| on the neighbours each source found."""

    config_fields = {
        **FittedFusion.config_fields,
        "lle_neighbors": 10,
        "lle_anchors": 1000,
        "lle_regularization": 1e-3,
    }
    card_text = (
        "Fusion by locally linear meta-embedding: each unit is rebuilt from its neighbours among stored anchor units "
        "with weights shared across backbones (Bollegala, Hayashi and Kawarabayashi, *Think Globally, Embed "
        "Locally -- Locally Linear Meta-embedding of Words*, IJCAI 2018)."
    )
    # rows of units whose anchor distances are computed at once (bounds memory: rows x anchors floats)
    chunk_rows = 4096

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        _check_positive_int(config.lle_neighbors, "lle_neighbors")
        _check_positive_int(config.lle_anchors, "lle_anchors")
        if config.lle_neighbors >= config.lle_anchors:
            raise ValueError(
                f"lle_neighbors={config.lle_neighbors} must be smaller than lle_anchors={config.lle_anchors}: "
                "a unit is rebuilt from fewer neighbours than there are anchors"
            )
        if not config.lle_regularization > 0:
            raise ValueError(f"lle_regularization must be positive, got {config.lle_regularization!r}")

    def __init__(self, config, input_dims: list[int]) -> None:
        self.anchor_count = config.lle_anchors
        super().__init__(config, input_dims)
        self.neighbors = config.lle_neighbors
        self.regularization = config.lle_regularization

    def fitted_shapes(self) -> dict[str, tuple[int, ...]]:
        count = self.anchor_count
        return {"anchors": (count, sum(self.input_dims)), "anchor_embeddings": (count, self.dim)}

    def init_block_weights(self) -> None:
        init.zeros_(self.anchors)
        init.zeros_(self.anchor_embeddings)

    def fuse(self, states, unit_mask):
        sources = self.sources(states)
        batch, units = sources[0].shape[:2]
        rows = [s.reshape(batch * units, -1).float() for s in sources]
        anchors = list(self.anchors.float().split(self.input_dims, dim=1))
        fused, shares = [], []
        for start in range(0, batch * units, self.chunk_rows):
            chunk = [r[start : start + self.chunk_rows] for r in rows]
            indices, weights = lle_weights(chunk, anchors, self.neighbors, self.regularization)
            fused.append(torch.einsum("rn,rnk->rk", weights, self.anchor_embeddings.float()[indices]))
            mass = weights.abs().reshape(len(weights), len(sources), self.neighbors).sum(-1)
            shares.append(mass / mass.sum(-1, keepdim=True))
        dtype = sources[0].dtype
        fused = torch.cat(fused).reshape(batch, units, -1).to(dtype)
        return fused, torch.cat(shares).reshape(batch, units, -1).to(dtype)


__all__ = ["LocallyLinearFusion", "lle_weights"]
