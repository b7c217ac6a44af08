"""Fitting the linear fitted fusions (`svd`, `pca`, `1ton`, `gcca`) from the sample's second moments.

Every one of them needs only X^T X and the column sums of the sample X (N, D) (the normalised, concatenated
sources), accumulated in float64 in one streamed pass (`Moments`): memory O(D^2) whatever N is. Where D is too wide
for a D x D matrix (`svd`/`pca` above `EXACT_LIMIT` columns), `randomized_top_eigenvectors` finds the top-k
directions by streamed randomised subspace iteration (Halko, Martinsson & Tropp 2011), O(D k) memory and a few
passes. Equations: see the classes in `hf_metaembed.modeling.fitted_fusion`. Not model code.
"""

import math
from collections.abc import Callable, Iterator

import torch

# widest concatenation whose D x D moment matrix `svd`/`pca` form (float64: 128 MiB at this width)
EXACT_LIMIT = 4096


class Moments:
    """Streamed count, column sums and X^T X of rows `(n, D)`, in float64."""

    def __init__(self, width: int) -> None:
        self.count = 0
        self.total = torch.zeros(width, dtype=torch.float64)
        self.gram = torch.zeros(width, width, dtype=torch.float64)

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.double()
        self.count += rows.shape[0]
        self.total += rows.sum(dim=0)
        self.gram += rows.T @ rows

    @property
    def mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)

    def scatter(self, centred: bool) -> torch.Tensor:
        """X^T X, or (X - 1 mu^T)^T (X - 1 mu^T) when `centred`."""
        if not centred:
            return self.gram
        return self.gram - self.count * torch.outer(self.mean, self.mean)


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Columns flipped so each one's largest-magnitude entry is positive (eigenvectors are defined up to sign)."""
    picks = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[picks, torch.arange(vectors.shape[1])])
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def top_eigenvectors(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(values (k,), vectors (D, k))` of the symmetric `matrix`, largest first, signs fixed."""
    values, vectors = torch.linalg.eigh(matrix)
    order = torch.argsort(values, descending=True)[:k]
    return values[order], _fix_signs(vectors[:, order])


def randomized_top_eigenvectors(
    passes: Callable[[], Iterator[torch.Tensor]],
    width: int,
    k: int,
    mean: torch.Tensor | None = None,
    oversample: int = 10,
    iterations: int = 2,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k eigenpairs of X^T X (centred by `mean` when given) by streamed randomised subspace iteration.

    `passes()` starts one pass over the rows `(n, D)`. Each pass computes Y = X^T (X Q) batch by batch; Q is
    re-orthonormalised between passes; the last pass also gives B = Q^T X^T X Q, whose eigenvectors W give V = Q W.
    Takes `iterations + 1` passes; memory O(D (k + oversample)).
    """
    generator = torch.Generator().manual_seed(seed)
    size = min(width, k + oversample)
    basis, _ = torch.linalg.qr(torch.randn(width, size, generator=generator, dtype=torch.float64))
    product = None
    for step in range(iterations + 1):
        product = torch.zeros(width, size, dtype=torch.float64)
        count = 0
        for rows in passes():
            rows = rows.double()
            count += rows.shape[0]
            product += rows.T @ (rows @ basis)
        if mean is not None:
            product -= count * torch.outer(mean, mean @ basis)
        small = basis.T @ product
        basis_next, _ = torch.linalg.qr(product)
        if step < iterations:
            basis = basis_next
    values, small_vectors = torch.linalg.eigh((small + small.T) / 2)
    order = torch.argsort(values, descending=True)[:k]
    return values[order], _fix_signs(basis @ small_vectors[:, order])


def fit_svd(moments: Moments, k: int, centred: bool) -> dict[str, torch.Tensor]:
    """`svd` (uncentred) or `pca` (centred): E = V_k^T, the top-k eigenvectors of the (centred) X^T X."""
    _, vectors = top_eigenvectors(moments.scatter(centred), k)
    mean = moments.mean if centred else torch.zeros_like(moments.mean)
    return {"encoder": vectors.T.float(), "source_mean": mean.float()}


def gcca_regularizers(scatter: torch.Tensor, dims: list[int], regularization: float) -> list[float]:
    """r_i = regularization * trace(C_ii) / d_i: a ridge on each source's scatter, relative to its scale."""
    blocks, start = [], 0
    for d in dims:
        block = scatter[start : start + d, start : start + d]
        blocks.append(float(regularization * block.diagonal().sum() / d))
        start += d
    return blocks


def fit_gcca(moments: Moments, dims: list[int], k: int, regularization: float = 1e-3) -> dict[str, torch.Tensor]:
    """MAXVAR GCCA from the centred scatter C: S = R^1/2 C R^1/2, E = sqrt(N) L^-1/2 V^T R^1/2."""
    scatter = moments.scatter(centred=True)
    half = torch.zeros_like(scatter)  # R^1/2 = blockdiag((C_ii + r_i I)^-1/2)
    start = 0
    for d, ridge in zip(dims, gcca_regularizers(scatter, dims, regularization)):
        block = scatter[start : start + d, start : start + d] + ridge * torch.eye(d, dtype=scatter.dtype)
        values, vectors = torch.linalg.eigh(block)
        half[start : start + d, start : start + d] = vectors @ torch.diag(values.clamp_min(1e-12).rsqrt()) @ vectors.T
        start += d
    values, vectors = top_eigenvectors(half @ scatter @ half, k)
    encoder = math.sqrt(moments.count) * torch.diag(values.clamp_min(1e-12).rsqrt()) @ vectors.T @ half
    return {"encoder": encoder.float(), "source_mean": moments.mean.float()}


def one_to_n_loss(
    gram: torch.Tensor, count: int, decoders: torch.Tensor, encoder: torch.Tensor, weights: torch.Tensor, penalties
) -> float:
    """The 1TON objective averaged over the N samples, from X^T X alone (m = E x):
    (1/N) [sum w ||M m - x||^2 + lam_m sum ||m||^2] + lam_M ||M||^2."""
    lam_m, lam_M = penalties
    code_moment = encoder @ gram @ encoder.T  # sum m m^T
    weighted = weights[:, None] * decoders
    error = (
        torch.trace(weights[:, None] * gram)
        - 2 * torch.trace(weighted @ encoder @ gram)
        + torch.trace(decoders.T @ weighted @ code_moment)
    )
    return float((error + lam_m * torch.trace(code_moment)) / count + lam_M * decoders.pow(2).sum())


def one_to_n_encoder(decoders: torch.Tensor, weights: torch.Tensor, lam_m: float) -> torch.Tensor:
    """The m-step (and the out-of-sample rule): E = (M^T W M + lam_m I)^-1 M^T W."""
    k = decoders.shape[1]
    weighted = weights[:, None] * decoders
    system = decoders.T @ weighted + lam_m * torch.eye(k, dtype=decoders.dtype)
    return torch.linalg.solve(system, weighted.T)


def fit_one_to_n(
    moments: Moments,
    dims: list[int],
    k: int,
    source_weights: list[float] | None = None,
    lam_m: float = 1e-4,
    lam_M: float = 1e-4,
    iterations: int = 200,
    tolerance: float = 1e-9,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """1TON by alternating least squares on X^T X: start from the top-k SVD directions, then repeat
    E = (M^T W M + lam_m I)^-1 M^T W (best codes for the maps) and M_i = C_i E^T (E C E^T + (N lam_M / w_i) I)^-1
    (best maps for the codes; C_i the rows of C = X^T X reading source i), each an exact minimisation, so the
    objective never rises. Returns the tensors and the objective after every iteration."""
    if source_weights is None:
        source_weights = [1.0] * len(dims)
    if len(source_weights) != len(dims) or any(w <= 0 for w in source_weights):
        raise ValueError(f"source_weights must be {len(dims)} positive numbers (one per backbone): {source_weights}")
    gram = moments.gram
    weights = torch.cat([torch.full((d,), float(w), dtype=torch.float64) for d, w in zip(dims, source_weights)])
    _, decoders = top_eigenvectors(gram, k)
    history = []
    for _ in range(iterations):
        encoder = one_to_n_encoder(decoders, weights, lam_m)
        code_moment = encoder @ gram @ encoder.T
        cross = encoder @ gram  # (k, D): sum m x^T
        blocks, start = [], 0
        for d, w in zip(dims, source_weights):  # block i: M_i = sum s_i m^T (sum m m^T + (N lam_M / w_i) I)^-1
            ridge = moments.count * lam_M / w * torch.eye(k, dtype=gram.dtype)
            blocks.append(torch.linalg.solve(code_moment + ridge, cross[:, start : start + d]).T)
            start += d
        decoders = torch.cat(blocks)
        history.append(one_to_n_loss(gram, moments.count, decoders, encoder, weights, (lam_m, lam_M)))
        if len(history) > 1 and history[-2] - history[-1] <= tolerance * max(abs(history[-2]), 1e-30):
            break
    encoder = one_to_n_encoder(decoders, weights, lam_m)
    tensors = {
        "encoder": encoder.float(),
        "source_mean": torch.zeros(sum(dims)),
        "decoders": decoders.float(),
    }
    return tensors, history
