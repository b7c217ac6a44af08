"""`fit_fusion(model, source, ...)`: fit a model's fitted fusion (`svd`, `pca`, `1ton`, `gcca`, `daeme`, `caeme`,
`aaeme`, `lle`) on a sample of its backbones' unit states, and store the result as the fusion's weights.

    model = MetaEmbedModel.from_backbones(paths, fusion="pca", fusion_dim=256)
    report = fit_fusion(model, "cache/")                           # a feature cache built for this model
    report = fit_fusion(model, sentences, processor=processor)     # or sequences, streamed through the backbones
    model.save_pretrained("fitted")                                # the fitted weights are saved in safetensors

Not model code: the model files never import it.
"""

import dataclasses
import time

import torch

from .._utils import metaembed_of
from ..modeling.fitted_autoencoded import AutoencodedFusion
from ..modeling.fitted_fusion import FittedFusion, LinearFittedFusion
from ..modeling.fitted_lle import LocallyLinearFusion
from ..modeling.fusion import FUSIONS, build_fusion
from .autoencoders import fit_autoencoder
from .linear import EXACT_LIMIT, Moments, fit_gcca, fit_one_to_n, fit_svd, randomized_top_eigenvectors
from .lle import fit_lle
from .rows import UnitRows, unit_rows


@dataclasses.dataclass
class FitReport:
    """What a fit did: the fusion, the vectors it saw, the time taken and per-method details (objective values)."""

    fusion: str
    vectors: int
    seconds: float
    details: dict


def fitted_fusion_names() -> list[str]:
    """The registered fusions `fit_fusion` can fit."""
    return [name for name, cls in FUSIONS.items() if issubclass(cls, FittedFusion)]


def _fusion_slot(base) -> tuple[torch.nn.Module, str]:
    """The module holding the fitted fusion and the attribute name it is held under."""
    for path, module in base.named_modules():
        if isinstance(module, FittedFusion):
            parent, _, attribute = path.rpartition(".")
            return base.get_submodule(parent), attribute
    raise ValueError("this model has no fitted fusion module to fit")


def _moments(rows: UnitRows, normalize: bool) -> Moments:
    from ..modeling.fitted_fusion import normalize_sources

    moments = Moments(sum(rows.dims))
    for batch in rows.batches():
        moments.add(torch.cat(normalize_sources(batch, normalize), dim=-1))
    if moments.count == 0:
        raise ValueError(f"no vectors to fit on in {rows.description}")
    return moments


def _fit_linear(fusion: LinearFittedFusion, rows: UnitRows, options: dict) -> tuple[dict, int, dict]:
    name = fusion.registered_name
    width = sum(fusion.input_dims)
    method = options.pop("svd_method", "auto")
    if name in ("svd", "pca") and (method == "randomized" or (method == "auto" and width > EXACT_LIMIT)):
        from ..modeling.fitted_fusion import normalize_sources

        def passes():
            for batch in rows.batches():
                yield torch.cat(normalize_sources(batch, fusion.normalize), dim=-1)

        mean, count = None, 0
        if fusion.centred:
            total = torch.zeros(width, dtype=torch.float64)
            for x in passes():
                total += x.double().sum(0)
                count += len(x)
            mean = total / count
        else:
            count = sum(len(x) for x in passes())
        _, vectors = randomized_top_eigenvectors(
            passes, width, fusion.output_dim, mean=mean, seed=options.pop("seed", 0), **options
        )
        source_mean = mean.float() if mean is not None else torch.zeros(width)
        return {"encoder": vectors.T.float(), "source_mean": source_mean}, count, {"svd_method": "randomized"}
    options.pop("seed", None)
    moments = _moments(rows, fusion.normalize)
    if moments.count < fusion.output_dim:
        raise ValueError(
            f"{moments.count} vectors cannot determine {fusion.output_dim} directions; fit on at least fusion_dim "
            f"({fusion.output_dim}) vectors"
        )
    if name in ("svd", "pca"):
        return fit_svd(moments, fusion.output_dim, fusion.centred, **options), moments.count, {"svd_method": "exact"}
    if name == "gcca":
        return fit_gcca(moments, fusion.input_dims, fusion.output_dim, **options), moments.count, {}
    tensors, history = fit_one_to_n(moments, fusion.input_dims, fusion.output_dim, **options)
    return tensors, moments.count, {"objective": history[-1], "iterations": len(history)}


def fit_fusion(
    model,
    source,
    *,
    processor=None,
    max_vectors: int | None = None,
    batch_rows: int = 4096,
    seed: int = 0,
    **options,
) -> FitReport:
    """Fit the model's fitted fusion on unit states and load the result into it (and mark it fitted in the config).

    Args:
        model: a MetaEmbed model (any head) whose `fusion` is one of `fitted_fusion_names()`.
        source: a feature cache built for the model (`FeatureCache` or its folder), a list of sequences (run through
            the backbones batch by batch; pass `processor`), or one `(vectors, d_i)` array per backbone.
        max_vectors: fit on the first this many unit vectors of the source.
        batch_rows: rows read at a time (bounds memory with the widths).
        seed: randomness of the randomised SVD, the autoencoders' initialisation and LLE's anchor sample.
        options: per method: `svd_method` ("auto", "exact", "randomized"), `oversample`, `iterations` (svd/pca);
            `regularization` (gcca); `source_weights`, `lam_m`, `lam_M`, `iterations`, `tolerance` (1ton);
            `epochs`, `learning_rate`, `alignment_weight`, `batch_rows` (daeme, caeme, aaeme).

    Returns:
        A `FitReport`. The model is changed in place; `save_pretrained` stores the fitted tensors.
    """
    base = metaembed_of(model)
    name = base.config.fusion
    if name not in fitted_fusion_names():
        extra = " (it has no weights: nothing to fit)" if name == "average" else ""
        raise ValueError(
            f"fusion {name!r} is not fitted on data{extra}; build the model with one of: "
            f"{', '.join(fitted_fusion_names())}"
        )
    owner, attribute = _fusion_slot(base)
    fusion = getattr(owner, attribute)
    rows = unit_rows(source, base, processor, batch_rows, max_vectors)
    if rows.dims != fusion.input_dims:
        raise ValueError(
            f"the data's backbone widths {rows.dims} differ from the model's {fusion.input_dims}; fit on features of "
            "this model's backbones"
        )
    started = time.perf_counter()
    details: dict = {}
    if isinstance(fusion, LinearFittedFusion):
        tensors, count, details = _fit_linear(fusion, rows, {"seed": seed, **options})
    elif isinstance(fusion, AutoencodedFusion):
        tensors, history = fit_autoencoder(fusion, rows, seed=seed, **options)
        count, details = sum(len(b[0]) for b in rows.batches()), {"epoch_losses": history}
    elif isinstance(fusion, LocallyLinearFusion):
        if options:
            raise TypeError(f"lle takes no fit options (its settings are config fields), got {sorted(options)}")
        tensors = fit_lle(fusion, rows, seed=seed)
        count = len(tensors["anchors"])
        if count != fusion.anchor_count:  # fewer vectors than anchors: the stored shapes follow the sample
            base.config.lle_anchors = count
            fusion = build_fusion(base.config, fusion.input_dims).to(fusion.anchors.device)
            setattr(owner, attribute, fusion)
        details = {"anchors": count}
    else:
        raise ValueError(f"no fitting rule for fusion {name!r}")
    fusion.load_fitted(tensors)
    base.config.fusion_fitted = True
    if hasattr(model, "config") and model.config is not base.config:
        model.config.fusion_fitted = True
    return FitReport(fusion=name, vectors=int(count), seconds=time.perf_counter() - started, details=details)
