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
from .registry import check_choice

logger = logging.get_logger(__name__)

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda tensor: tensor}


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
        """Name and shape of every fitted tensor."""
        raise NotImplementedError

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


class AutoencodedFusion(FittedFusion):
    """Autoencoded meta-embeddings (Bollegala & Bao, "Learning Word Meta-Embeddings by Autoencoding", COLING 2018),
    for n sources: encoders e_i = f(W_i s_i + b_i) (k each; f = `autoencoder_activation`) and linear decoders
    D_i(z) = V_i z + c_i. The variants differ in what is fused and what each decoder reads (see the subclasses);
    `objective` is their reconstruction loss (mean over the rows of a batch), minimised by `fit_fusion`. Encoders are
    functions of the input, so unseen inputs are encoded exactly as the sample was."""

    config_fields = {**FittedFusion.config_fields, "autoencoder_activation": "tanh"}
    combine = "concat"
    decoder_reads = "meta"  # "own": D_i(e_i); "meta": D_i(fused)

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        check_choice(config.autoencoder_activation, tuple(ACTIVATIONS), "autoencoder_activation")

    @classmethod
    def output_size(cls, config, input_dims: list[int]) -> int:
        size = common_size(config, input_dims)
        return size * len(input_dims) if cls.combine == "concat" and size is not None else size

    def __init__(self, config, input_dims: list[int]) -> None:
        super().__init__(config, input_dims)
        self.activation = config.autoencoder_activation

    def fitted_shapes(self) -> dict[str, tuple[int, ...]]:
        read = self.dim if self.decoder_reads == "own" else self.output_dim
        shapes = {}
        for i, d in enumerate(self.input_dims):
            shapes[f"encoder_weight_{i}"] = (self.dim, d)
            shapes[f"encoder_bias_{i}"] = (self.dim,)
            shapes[f"decoder_weight_{i}"] = (d, read)
            shapes[f"decoder_bias_{i}"] = (d,)
        return shapes

    def init_block_weights(self) -> None:
        for name in self.fitted_shapes():
            tensor = self.fitted_tensor(name)
            if "weight" in name:
                init.xavier_uniform_(tensor)
            else:
                init.zeros_(tensor)

    def encode(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        """e_i = f(W_i s_i + b_i) for each source: `[(..., d_i)]` -> `[(..., k)]`."""
        act = ACTIVATIONS[self.activation]
        return [
            act(F.linear(s, self.fitted_tensor(f"encoder_weight_{i}"), self.fitted_tensor(f"encoder_bias_{i}")))
            for i, s in enumerate(sources)
        ]

    def combine_codes(self, codes: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(codes, dim=-1) if self.combine == "concat" else torch.stack(codes, dim=0).mean(dim=0)

    def decode(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each source reconstructed, D_i(e_i) (`own`) or D_i(fused) (`meta`)."""
        fused = self.combine_codes(codes)
        return [
            F.linear(
                codes[i] if self.decoder_reads == "own" else fused,
                self.fitted_tensor(f"decoder_weight_{i}"),
                self.fitted_tensor(f"decoder_bias_{i}"),
            )
            for i in range(len(codes))
        ]

    def objective(self, sources: list[torch.Tensor], alignment_weight: float = 1.0) -> torch.Tensor:
        """The variant's loss on normalised sources `[(rows, d_i)]`: sum_i ||s_i - D_i(.)||^2 (plus DAEME's alignment
        term), averaged over the rows."""
        codes = self.encode(sources)
        loss = sum((s - r).pow(2).sum(-1) for s, r in zip(sources, self.decode(codes)))
        if self.decoder_reads == "own":  # DAEME keeps the separately encoded sources close
            for i in range(len(codes)):
                for j in range(i + 1, len(codes)):
                    loss = loss + alignment_weight * (codes[i] - codes[j]).pow(2).sum(-1)
        return loss.mean()

    def fuse(self, states, unit_mask):
        codes = self.encode(self.sources(states))
        return self.combine_codes(codes), contribution_weights(codes)


@FUSIONS.register("daeme")
class DecoupledAutoencodedFusion(AutoencodedFusion):
    """DAEME: out = [e_1; ...; e_n] (n k); each decoder reads its own code; loss sum_i ||s_i - D_i(e_i)||^2 +
    a sum_{i<j} ||e_i - e_j||^2 (a = `alignment_weight` of the fit, 1 by default)."""

    card_text = (
        "Fusion DAEME: one autoencoder per backbone, codes kept close and concatenated (Bollegala and Bao, "
        "*Learning Word Meta-Embeddings by Autoencoding*, COLING 2018)."
    )
    combine = "concat"
    decoder_reads = "own"


@FUSIONS.register("caeme")
class ConcatenatedAutoencodedFusion(AutoencodedFusion):
    """CAEME: out = m = [e_1; ...; e_n] (n k); every decoder reads m; loss sum_i ||s_i - D_i(m)||^2."""

    card_text = (
        "Fusion CAEME: backbone codes concatenated, every backbone reconstructed from the concatenation (Bollegala "
        "and Bao, *Learning Word Meta-Embeddings by Autoencoding*, COLING 2018)."
    )
    combine = "concat"
    decoder_reads = "meta"


@FUSIONS.register("aaeme")
class AveragedAutoencodedFusion(AutoencodedFusion):
    """AAEME: out = m = (1/n) sum_i e_i (k); every decoder reads m; loss sum_i ||s_i - D_i(m)||^2."""

    card_text = (
        "Fusion AAEME: backbone codes averaged, every backbone reconstructed from the average (Bollegala and Bao, "
        "*Learning Word Meta-Embeddings by Autoencoding*, COLING 2018)."
    )
    combine = "mean"
    decoder_reads = "meta"


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


__all__ = [
    "AverageFusion",
    "AutoencodedFusion",
    "FittedFusion",
    "LinearFittedFusion",
    "LocallyLinearFusion",
    "contribution_weights",
    "lle_weights",
    "normalize_sources",
]
