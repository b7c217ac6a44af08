"""Fitted meta-embeddings (issue 19, section 1): each method against its equations on small inputs, its rule for
inputs unseen at fit time, and save/reload of the fitted weights."""

import types

import pytest
import torch

from hf_metaembed.fitting import fit_fusion, fitted_fusion_names
from hf_metaembed.fitting.linear import Moments, fit_one_to_n, gcca_regularizers, one_to_n_encoder, one_to_n_loss
from hf_metaembed.fitting.lle import embed_anchors, sample_anchors
from hf_metaembed.fitting.rows import UnitRows
from hf_metaembed.modeling import fitted_lle
from hf_metaembed.modeling.fusion import FUSIONS
from hf_metaembed.modeling.registry import block_config_fields


def make_fusion(name: str, dims: list[int], **settings):
    config = types.SimpleNamespace(**{**block_config_fields(), "fusion_dim": None, **settings})
    cls = FUSIONS.get_class(name)
    cls.check_config(config, dims)
    fusion = cls(config, dims)
    if hasattr(fusion, "init_block_weights"):
        fusion.init_block_weights()
    return fusion


def low_rank_sources(count: int = 60, dims=(5, 4), rank: int = 3, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    factors = torch.randn(count, rank, generator=generator)
    return [factors @ torch.randn(rank, d, generator=generator) for d in dims]


def fit_arrays(name: str, sources: list[torch.Tensor], **settings):
    """A fitted fusion module (fitted through a stand-in model holding only the fusion)."""
    options = settings.pop("options", {})
    fusion = make_fusion(name, [s.shape[1] for s in sources], **settings)
    model = _FusionOnly(fusion, settings)
    report = fit_fusion(model, sources, **options)
    return model.fusion, report


class _FusionOnly(torch.nn.Module):
    """The smallest model `fit_fusion` accepts: a config and a fusion (backbones are not needed to fit on arrays)."""

    def __init__(self, fusion, settings) -> None:
        super().__init__()
        self.fusion = fusion
        fields = {**block_config_fields(), "fusion_dim": None, **settings, "fusion": fusion.registered_name}
        self.config = types.SimpleNamespace(**fields)


@pytest.fixture(autouse=True)
def fusion_only_models(monkeypatch):
    import hf_metaembed.fitting.api as api

    original = api.metaembed_of
    monkeypatch.setattr(api, "metaembed_of", lambda m: m if isinstance(m, _FusionOnly) else original(m))


def fuse_rows(fusion, sources: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(1, len(sources[0]), dtype=torch.long)
    with torch.no_grad():
        fused, weights = fusion([s.unsqueeze(0) for s in sources], mask)
    return fused[0], weights[0]


def normalized_concat(sources):
    return torch.cat([torch.nn.functional.normalize(s.double(), dim=-1) for s in sources], dim=-1)


def align_signs(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    signs = torch.sign((reference * other).sum(0))
    return other * signs


def test_every_fitted_name_is_registered():
    assert set(fitted_fusion_names()) == {"svd", "pca", "1ton", "gcca", "daeme", "caeme", "aaeme", "lle"}
    assert "average" in FUSIONS and "average" not in fitted_fusion_names()


def test_average_normalises_pads_and_averages():
    fusion = make_fusion("average", [2, 3])
    fused, weights = fuse_rows(fusion, [torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0, 2.0]])])
    torch.testing.assert_close(fused, torch.tensor([[0.3, 0.4, 0.5]]))
    torch.testing.assert_close(weights, torch.tensor([[0.5, 0.5]]))
    assert fusion.output_dim == 3 and not list(fusion.parameters())


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_svd_keeps_the_top_right_singular_vectors(method):
    sources = low_rank_sources()
    fusion, report = fit_arrays("svd", sources, fusion_dim=2, options={"svd_method": method})
    assert report.vectors == 60 and report.details["svd_method"] == method
    x = normalized_concat(sources)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    expected = (u[:, :2] * s[:2]).float()  # the sample's meta-embeddings U_k S_k
    fused, weights = fuse_rows(fusion, sources)
    torch.testing.assert_close(align_signs(expected, fused), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fusion.source_mean, torch.zeros(9))
    # the weights are each source's share of the squared norms of the per-source parts c_i = E_i s_i
    parts = [x[:, :5].float() @ fusion.encoder[:, :5].T, x[:, 5:].float() @ fusion.encoder[:, 5:].T]
    energy = torch.stack([p.pow(2).sum(-1) for p in parts], dim=-1)
    torch.testing.assert_close(weights, energy / energy.sum(-1, keepdim=True), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(parts[0] + parts[1], fused, atol=1e-5, rtol=1e-5)


def test_pca_centres_and_decorrelates():
    sources = low_rank_sources(seed=1)
    fusion, _ = fit_arrays("pca", sources, fusion_dim=3)
    fused, _ = fuse_rows(fusion, sources)
    x = normalized_concat(sources)
    torch.testing.assert_close(fusion.source_mean, x.mean(0).float())
    torch.testing.assert_close(fused.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    covariance = fused.double().T @ fused.double()
    eigenvalues = torch.linalg.eigvalsh(torch.cov(x.T, correction=0) * len(x)).flip(0)[:3]
    torch.testing.assert_close(covariance, torch.diag(eigenvalues), atol=1e-4, rtol=1e-4)


def test_gcca_equals_the_top_eigenvectors_of_the_summed_projections():
    sources = [s + 0.1 * torch.randn(s.shape, generator=torch.Generator().manual_seed(2)) for s in low_rank_sources()]
    fusion, _ = fit_arrays("gcca", sources, fusion_dim=2, options={"regularization": 0.01})
    fused, _ = fuse_rows(fusion, sources)
    x = normalized_concat(sources)
    centred = x - x.mean(0)
    moments = Moments(9)
    moments.add(x)
    ridges = gcca_regularizers(moments.scatter(True), [5, 4], 0.01)
    summed = torch.zeros(60, 60, dtype=torch.float64)
    for block, ridge in zip(centred.split([5, 4], dim=1), ridges):  # P_i = X_i (X_i^T X_i + r_i I)^-1 X_i^T
        summed += block @ torch.linalg.solve(block.T @ block + ridge * torch.eye(block.shape[1]), block.T)
    values, vectors = torch.linalg.eigh(summed)
    expected = vectors[:, -2:].flip(1) * 60**0.5  # G, scaled so G^T G = N I
    torch.testing.assert_close(align_signs(expected, fused.double()), expected, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(
        fused.double().T @ fused.double(), 60 * torch.eye(2, dtype=torch.float64), atol=1e-3, rtol=1e-4
    )


def test_one_to_n_alternating_least_squares_descends_and_reconstructs():
    sources = low_rank_sources(rank=3)
    x = torch.cat(sources, dim=-1).double()  # unnormalised: exactly rank 3
    moments = Moments(9)
    moments.add(x)
    tensors, history = fit_one_to_n(moments, [5, 4], 3, lam_m=1e-6, lam_M=1e-6)
    assert all(b <= a + 1e-9 * abs(a) for a, b in zip(history, history[1:]))  # every step an exact minimisation
    options = {"lam_m": 1e-6, "lam_M": 1e-6}
    fusion, _ = fit_arrays("1ton", sources, fusion_dim=3, fitted_normalize=False, options=options)
    fused, _ = fuse_rows(fusion, sources)
    # rank-3 data: M_i m reconstructs every source
    rebuilt = torch.cat(fusion.reconstruct(fused), dim=-1)
    torch.testing.assert_close(rebuilt, x.float(), atol=1e-3, rtol=1e-3)
    weights = torch.ones(9, dtype=torch.float64)
    encoder = tensors["encoder"].double()
    loss = one_to_n_loss(moments.gram, 60, tensors["decoders"].double(), encoder, weights, (1e-6, 1e-6))
    assert loss < 1e-3 * float(x.pow(2).sum(-1).mean())


def test_one_to_n_out_of_sample_rule_is_the_ridge_minimiser():
    sources = low_rank_sources(rank=4, seed=3)
    weights = [2.0, 0.5]
    options = {"source_weights": weights, "lam_m": 0.1, "lam_M": 1e-3}
    fusion, _ = fit_arrays("1ton", sources, fusion_dim=2, options=options)
    unseen = [torch.randn(1, 5, generator=torch.Generator().manual_seed(9)), torch.randn(1, 4)]
    code, _ = fuse_rows(fusion, unseen)
    code = code[0].double().requires_grad_()
    s = normalized_concat(unseen)[0]
    w = torch.cat([torch.full((5,), 2.0), torch.full((4,), 0.5)]).double()
    decoders = fusion.decoders.double()
    objective = (w * (decoders @ code - s).pow(2)).sum() + 0.1 * code.pow(2).sum()
    (gradient,) = torch.autograd.grad(objective, code)
    torch.testing.assert_close(gradient, torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(fusion.encoder.double(), one_to_n_encoder(decoders, w, 0.1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "width"),
    [("daeme", 6), ("caeme", 6), ("aaeme", 3)],
)
def test_autoencoders_follow_their_equations(name, width):
    fusion = make_fusion(name, [2, 3], fusion_dim=3)
    generator = torch.Generator().manual_seed(0)
    tensors = {key: torch.randn(shape, generator=generator) for key, shape in fusion.fitted_shapes().items()}
    fusion.load_fitted(tensors)
    sources = [torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0, 0.0]])]
    s1, s2 = torch.tensor([[0.6, 0.8]]), torch.tensor([[0.0, 1.0, 0.0]])
    e1 = torch.tanh(s1 @ tensors["encoder_weight_0"].T + tensors["encoder_bias_0"])
    e2 = torch.tanh(s2 @ tensors["encoder_weight_1"].T + tensors["encoder_bias_1"])
    fused, weights = fuse_rows(fusion, sources)
    expected = (e1 + e2) / 2 if name == "aaeme" else torch.cat([e1, e2], dim=-1)
    assert fused.shape == (1, width)
    torch.testing.assert_close(fused, expected)
    energy = torch.stack([e1.pow(2).sum(), e2.pow(2).sum()])
    torch.testing.assert_close(weights[0], energy / energy.sum())

    def decode(i, read):
        return read @ tensors[f"decoder_weight_{i}"].T + tensors[f"decoder_bias_{i}"]

    if name == "daeme":
        loss = (s1 - decode(0, e1)).pow(2).sum() + (s2 - decode(1, e2)).pow(2).sum() + 0.5 * (e1 - e2).pow(2).sum()
    else:
        loss = (s1 - decode(0, expected)).pow(2).sum() + (s2 - decode(1, expected)).pow(2).sum()
    torch.testing.assert_close(fusion.objective([s1, s2], alignment_weight=0.5), loss)


@pytest.mark.parametrize("name", ["daeme", "caeme", "aaeme"])
def test_autoencoder_fit_lowers_its_loss(name):
    fusion, report = fit_arrays(
        name, low_rank_sources(count=64), fusion_dim=3, options={"epochs": 8, "batch_rows": 16}
    )
    losses = report.details["epoch_losses"]
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]
    assert fusion.fitted


def test_lle_weights_rebuild_a_point_from_its_neighbours():
    anchors = [torch.tensor([[0.0], [2.0], [10.0]]), torch.tensor([[0.0], [4.0], [30.0]])]
    query = [torch.tensor([[1.0]]), torch.tensor([[2.0]])]
    indices, weights = fitted_lle.lle_weights(query, anchors, neighbors=2, regularization=1e-3)
    per_anchor = torch.zeros(3, dtype=weights.dtype).scatter_add_(0, indices[0], weights[0])
    torch.testing.assert_close(per_anchor, torch.tensor([0.5, 0.5, 0.0]), atol=1e-5, rtol=0)
    assert set(indices[0].tolist()) == {0, 1}


def test_lle_embedding_solves_its_eigenproblem():
    sources = [s.double() for s in low_rank_sources(count=40)]
    embeddings = embed_anchors(sources, k=2, neighbors=5, regularization=1e-3).double()
    torch.testing.assert_close(embeddings.T @ embeddings, 40 * torch.eye(2, dtype=torch.float64), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(embeddings.sum(0), torch.zeros(2, dtype=torch.float64), atol=1e-3, rtol=0)
    indices, weights = fitted_lle.lle_weights(sources, sources, 5, 1e-3, exclude_self=True)
    assert not (indices == torch.arange(40).unsqueeze(1)).any()  # no unit is its own neighbour while fitting
    w = torch.zeros(40, 40, dtype=torch.float64).scatter_add_(1, indices, weights)
    residual = torch.eye(40, dtype=torch.float64) - w
    cost = (residual @ embeddings).pow(2).sum()
    random = torch.linalg.qr(torch.randn(40, 2, dtype=torch.float64))[0] * 40**0.5
    random = random - random.mean(0)
    assert cost < (residual @ random).pow(2).sum()


def test_lle_out_of_sample_rule_uses_the_stored_anchors():
    sources = low_rank_sources(count=50)
    fusion, report = fit_arrays("lle", sources, fusion_dim=2, lle_neighbors=4, lle_anchors=30)
    assert report.vectors == 30 and fusion.anchors.shape == (30, 9)
    unseen = [torch.randn(3, 5, generator=torch.Generator().manual_seed(4)), torch.randn(3, 4)]
    fused, shares = fuse_rows(fusion, unseen)
    query = [torch.nn.functional.normalize(s, dim=-1) for s in unseen]
    indices, weights = fitted_lle.lle_weights(query, list(fusion.anchors.split([5, 4], dim=1)), 4, 1e-3)
    torch.testing.assert_close(fused, torch.einsum("rn,rnk->rk", weights, fusion.anchor_embeddings[indices]))
    torch.testing.assert_close(shares.sum(-1), torch.ones(3))
    # an input equal to an anchor is rebuilt from that anchor alone
    anchor = [part[:1] for part in fusion.anchors.split([5, 4], dim=1)]
    on_anchor, _ = fuse_rows(fusion, anchor)
    torch.testing.assert_close(on_anchor[0], fusion.anchor_embeddings[0], atol=1e-2, rtol=0)  # up to the ridge


def test_reservoir_sample_is_uniform_and_keeps_order():
    rows = UnitRows.from_arrays([torch.arange(1000.0).unsqueeze(1) + 1, torch.ones(1000, 1)], batch_rows=64)
    picked = sample_anchors(rows, 100, normalize=False, seed=0)[:, 0] - 1
    assert len(picked) == 100 and len(set(picked.tolist())) == 100
    assert (picked.diff() > 0).all() and 350 < picked.mean() < 650


def test_fit_errors_name_the_problem():
    with pytest.raises(ValueError, match="fusion_dim <= 9"):
        make_fusion("svd", [5, 4], fusion_dim=12)
    with pytest.raises(ValueError, match="lle_neighbors=30 must be smaller than lle_anchors=30"):
        make_fusion("lle", [5, 4], lle_neighbors=30, lle_anchors=30)
    with pytest.raises(ValueError, match="unknown autoencoder_activation 'gelu'; choose one of: tanh, relu"):
        make_fusion("aaeme", [5, 4], autoencoder_activation="gelu")
    fusion = make_fusion("svd", [5, 4], fusion_dim=2)
    with pytest.raises(ValueError, match=r"must have shape \(2, 9\)"):
        fusion.load_fitted({"encoder": torch.zeros(3, 9), "source_mean": torch.zeros(9)})
    with pytest.raises(ValueError, match="widths"):
        fit_fusion(_FusionOnly(fusion, {}), [torch.zeros(10, 5), torch.zeros(10, 3)])
