"""Fitting the fitted meta-embeddings (`svd`, `pca`, `1ton`, `gcca`, `daeme`, `caeme`, `aaeme`, `lle`) on a sample of
backbone unit states: `fit_fusion(model, source, ...)`. The fusions themselves (applying the fitted weights) are
model code in `hf_metaembed.modeling.fitted_fusion`; this package is not, and the model files never import it."""

from ..modeling import fitted_fusion  # noqa: F401  (registers the fitted fusions)
from .api import FitReport, fit_fusion, fitted_fusion_names
from .rows import UnitRows, unit_rows

__all__ = ["FitReport", "UnitRows", "fit_fusion", "fitted_fusion_names", "unit_rows"]
