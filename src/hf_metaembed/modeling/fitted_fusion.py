"""Fitted meta-embeddings: fusions whose weights are fitted once on a sample of backbone states, then applied.

Notation: source (backbone) i gives a unit state h_i of width d_i; with `fitted_normalize=True` (the default, as the
papers normalise every source) each is first L2-normalised, s_i = h_i / ||h_i||; x = [s_1; ...; s_n] is their
concatenation, of width D = sum_i d_i; k is the fused size (`fusion_dim`, defaults to the smallest d_i).

| name | fused unit state | fitted by (`hf_metaembed.fit_fusion`) |
| --- | --- | --- |
| `average` | (1/n) sum_i pad(s_i), zero-padded to max d_i (Coates & Bollegala 2018); no fitting | nothing |
| `svd` | V_k^T x: top-k right singular vectors of the sample's X (Yin & Schuetze 2016's SVD baseline) | X^T X |
| `pca` | V_k^T (x - mean): the same, centred | covariance |
| `1ton` | m = (sum_i M_i^T M_i + lam I)^-1 sum_i M_i^T s_i, M_i source maps (Yin & Schuetze 2016) | alternating LS |
| `gcca` | g = sqrt(N) L^-1/2 V^T R^1/2 (x - mean), MAXVAR generalised CCA (Rastogi et al. 2015) | X^T X |
| `daeme`, `caeme`, `aaeme` | e_i = f(W_i s_i + b_i), concatenated or averaged (Bollegala & Bao 2018) | autoencoding |
| `lle` | m = sum_v w_v m_v over the stored anchors' meta-embeddings (Bollegala et al. 2018) | LLE eigenproblem |

Each class states its equations and its rule for inputs unseen at fit time. Fitted tensors are buffers, saved in
safetensors with the model; `fitted_trainable=True` makes them parameters that train with the task.
`fusion_weights` of the linear and autoencoded fusions are each source's share of the fused vector's squared norm,
||c_i||^2 / sum_j ||c_j||^2 where the fused vector is built from per-source parts c_i (uniform where all are zero).

Part of the model code copied next to a saved model for `trust_remote_code`: imports torch, transformers and its
siblings only. The fitting code lives in `hf_metaembed.fitting` (not model code).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import logging

from .fusion import FUSIONS, Fusion, common_size

logger = logging.get_logger(__name__)


def normalize_sources(states: list[torch.Tensor], enabled: bool = True) -> list[torch.Tensor]:
    """Each source's state L2-normalised over its last axis (zero vectors stay zero), or unchanged."""
    return [F.normalize(h, dim=-1) for h in states] if enabled else list(states)


def contribution_weights(contributions: list[torch.Tensor]) -> torch.Tensor:
    """Per-source share of the squared norm, `(..., n)` from per-source parts `[(..., k)]`; uniform where all are 0."""
    energy = torch.stack([part.pow(2).sum(-1) for part in contributions], dim=-1)
    total = energy.sum(-1, keepdim=True)
    shares = energy / total.clamp_min(torch.finfo(energy.dtype).tiny)
    return torch.where(total > 0, shares, torch.full_like(shares, 1.0 / len(contributions)))


def _check_positive_int(value, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{field} must be a positive integer, got {value!r}")


@FUSIONS.register("average")
class AverageFusion(Fusion):
    """Averaged meta-embedding (Coates & Bollegala, "Frustratingly Easy Meta-Embedding -- Computing Meta-Embeddings
    by Averaging Source Word Embeddings", NAACL 2018): every source L2-normalised, zero-padded to the widest source
    and averaged, out = (1/n) sum_i [s_i; 0]. No parameters and no fitting; any input is handled the same way.
    Weights are uniform 1/n."""

    card_text = (
        "Fusion averages the L2-normalised backbone states, zero-padded to the widest one (Coates and Bollegala, "
        "*Frustratingly Easy Meta-Embedding*, NAACL 2018)."
    )

    @classmethod
    def output_size(cls, config, input_dims: list[int]) -> int:
        return max(input_dims) if input_dims else None

    def fuse(self, states, unit_mask):
        padded = [F.pad(s, (0, self.output_dim - s.shape[-1])) for s in normalize_sources(states)]
        fused = torch.stack(padded, dim=0).mean(dim=0)
        weights = fused.new_full((*fused.shape[:2], len(states)), 1.0 / len(states))
        return fused, weights


class FittedFusion(Fusion):
    """Base of the fusions fitted on a sample: declares the fitted tensors (`fitted_shapes`), stores them as buffers
    (parameters with `fitted_trainable=True`) and takes fitted values through `load_fitted`."""

    config_fields = {"fitted_trainable": False, "fitted_normalize": True, "fusion_fitted": False}

    def __init__(self, config, input_dims: list[int]) -> None:
        super().__init__(config, input_dims)
        self.normalize = config.fitted_normalize
        self.fitted = bool(config.fusion_fitted)
        for name, shape in self.fitted_shapes().items():
            value = torch.zeros(shape)
            if config.fitted_trainable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def fitted_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name and shape of every fitted tensor (each fitted fusion defines its own)."""
        raise NotImplementedError(f"{type(self).__name__} must define fitted_shapes()")

    def fitted_tensor(self, name: str) -> torch.Tensor:
        return getattr(self, name)

    @torch.no_grad()
    def load_fitted(self, values: dict[str, torch.Tensor]) -> None:
        """Copy fitted values in (names and shapes as `fitted_shapes`), and mark the fusion fitted."""
        expected = self.fitted_shapes()
        if set(values) != set(expected):
            raise ValueError(
                f"{self.registered_name} fusion takes the fitted tensors {sorted(expected)}, got {sorted(values)}"
            )
        for name, shape in expected.items():
            value = torch.as_tensor(values[name])
            if tuple(value.shape) != tuple(shape):
                raise ValueError(
                    f"fitted tensor {name!r} of the {self.registered_name} fusion must have shape {tuple(shape)}, "
                    f"got {tuple(value.shape)}; fit it for these backbones and this fusion_dim"
                )
            target = self.fitted_tensor(name)
            target.copy_(value.to(device=target.device, dtype=target.dtype))
        self.fitted = True

    def sources(self, states: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.fitted:
            logger.warning_once(
                f"the {self.registered_name} fusion has not been fitted: its weights are placeholders; fit it with "
                "hf_metaembed.fit_fusion(model, data) (or `hf-metaembed fit-fusion`) before using the model"
            )
        return normalize_sources(states, self.normalize)


class LinearFittedFusion(FittedFusion):
    """Fused state = E (x - mu): one fitted linear encoder E (k, D) over the (normalised) concatenation, centred by
    a fitted mean mu (zero for the uncentred methods). The part of source i is c_i = E_i (s_i - mu_i) with E_i the
    columns of E that read source i, and out = sum_i c_i. Unseen inputs go through the same linear map."""

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        size = common_size(config, dims)
        if dims and size > sum(dims):
            raise ValueError(
                f"fusion_dim={size} is wider than the backbones' concatenation ({sum(dims)}); the "
                f"{cls.registered_name} fusion keeps at most that many directions: set fusion_dim <= {sum(dims)}"
            )

    def fitted_shapes(self) -> dict[str, tuple[int, ...]]:
        total = sum(self.input_dims)
        return {"source_mean": (total,), "encoder": (self.output_dim, total)}

    def init_block_weights(self) -> None:
        """Placeholder before fitting: the first k coordinates of the concatenation."""
        init.zeros_(self.source_mean)
        init.eye_(self.encoder)

    def contributions(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        means = self.source_mean.to(sources[0].dtype).split(self.input_dims)
        blocks = self.encoder.to(sources[0].dtype).split(self.input_dims, dim=1)
        return [(s - mean) @ block.T for s, mean, block in zip(sources, means, blocks)]

    def fuse(self, states, unit_mask):
        parts = self.contributions(self.sources(states))
        return torch.stack(parts, dim=0).sum(dim=0), contribution_weights(parts)


@FUSIONS.register("svd")
class SVDFusion(LinearFittedFusion):
    """SVD of the concatenated, normalised sources (the SVD baseline of Yin & Schuetze, "Learning Word
    Meta-Embeddings", ACL 2016). Fit: X (N, D) stacks the sample's x; X = U S V^T; E = V_k^T (the top-k right singular
    vectors), mu = 0, so the sample's meta-embeddings are X V_k = U_k S_k. Out of sample: V_k^T x, the same map."""

    card_text = (
        "Fusion projects the concatenated, L2-normalised backbone states on their top singular directions, fitted "
        "on a sample (the SVD baseline of Yin and Schuetze, *Learning Word Meta-Embeddings*, ACL 2016)."
    )
    centred = False


@FUSIONS.register("pca")
class PCAFusion(LinearFittedFusion):
    """PCA of the concatenated, normalised sources: as `svd` on the centred sample, E = V_k^T of X - 1 mu^T (the
    top-k eigenvectors of the covariance), mu the sample mean. Out of sample: V_k^T (x - mu)."""

    card_text = (
        "Fusion projects the centred, concatenated, L2-normalised backbone states on their top principal "
        "components, fitted on a sample (as the SVD baseline of Yin and Schuetze, ACL 2016)."
    )
    centred = True


@FUSIONS.register("1ton")
class OneToNFusion(LinearFittedFusion):
    """1TON (Yin & Schuetze, "Learning Word Meta-Embeddings", ACL 2016): a meta-embedding m (k) and one linear map
    M_i (d_i, k) per source such that M_i m reconstructs s_i, fitted by minimising

        L = sum_samples sum_i w_i ||M_i m - s_i||^2 + lam_m ||m||^2  (+ lam_M sum_i ||M_i||^2)

    (w_i the per-source weights of the paper, lam the L2 penalties). For fixed maps, the optimal m of any input is
    the ridge solution m(x) = (sum_i w_i M_i^T M_i + lam_m I)^-1 sum_i w_i M_i^T s_i: a linear encoder E, stored as
    `encoder`. This is both how the sample's meta-embeddings are obtained while fitting (the m-step of alternating
    least squares) and the rule for inputs unseen at fit time, so a unit in the sample and an unseen unit with the
    same states get the same meta-embedding. The maps are kept (`decoders`, (D, k)): `reconstruct(m)` predicts every
    source from a meta-embedding (1TON+'s way to fill in a source a word lacks)."""

    card_text = (
        "Fusion 1TON: a meta-embedding from which one linear map per backbone reconstructs that backbone's "
        "L2-normalised state, fitted on a sample (Yin and Schuetze, *Learning Word Meta-Embeddings*, ACL 2016)."
    )
    centred = False

    def fitted_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**super().fitted_shapes(), "decoders": (sum(self.input_dims), self.output_dim)}

    def init_block_weights(self) -> None:
        super().init_block_weights()
        init.eye_(self.decoders)

    def reconstruct(self, fused: torch.Tensor) -> list[torch.Tensor]:
        """Every source's (normalised) state predicted from meta-embeddings: `(..., k)` -> `[(..., d_i)]`."""
        return list((fused @ self.decoders.to(fused.dtype).T).split(self.input_dims, dim=-1))


@FUSIONS.register("gcca")
class GCCAFusion(LinearFittedFusion):
    """Generalised CCA, MAXVAR form (Rastogi, Van Durme & Arora, "Multiview LSA: Representation Learning via
    Generalized CCA", NAACL 2015): find G (N, k), G^T G = I, and per-source U_i minimising sum_i ||G - X_i U_i||^2;
    G is the top-k eigenvectors of sum_i P_i, P_i = X_i (X_i^T X_i + r_i I)^-1 X_i^T (X_i the centred sample of
    source i, r_i the regulariser). With R = blockdiag((X_i^T X_i + r_i I)^-1) and X = [X_1 ... X_n], sum_i P_i =
    X R X^T shares its nonzero eigenvalues L with S = R^1/2 X^T X R^1/2 (D, D), and G = X R^1/2 V L^-1/2 for S's top
    eigenvectors V. Stored: E = sqrt(N) L^-1/2 V^T R^1/2 (scaled so the sample's fused coordinates have unit second
    moment), mu the sample mean. Out of sample: the same linear map, g(x) = E (x - mu); the sample gets exactly its
    rows of sqrt(N) G."""

    card_text = (
        "Fusion by generalised canonical correlation analysis across the backbones (MAXVAR), fitted on a sample "
        "(Rastogi, Van Durme and Arora, *Multiview LSA: Representation Learning via Generalized CCA*, NAACL 2015)."
    )
    centred = True


__all__ = [
    "AverageFusion",
    "FittedFusion",
    "LinearFittedFusion",
    "contribution_weights",
    "normalize_sources",
]
