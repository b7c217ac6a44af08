"""Dissociation constants as regression labels: exact pKd (the default) and the study's reference label, by name in
`LABEL_TRANSFORMS`."""

from collections.abc import Sequence

import numpy as np

from .arrays import to_numpy

# molar value of one unit of each accepted dissociation-constant unit
KD_UNITS = {"M": 1.0, "mM": 1e-3, "uM": 1e-6, "µM": 1e-6, "μM": 1e-6, "nM": 1e-9, "pM": 1e-12, "fM": 1e-15}


def kd_to_pkd(kd: float | Sequence[float] | np.ndarray, unit: str = "M") -> float | np.ndarray:
    """pKd = -log10(KD in molar), with no capping (1 fM gives 15, 1 mM gives 3).

    Args:
        kd: one dissociation constant or an array of them (any shape; torch tensors are accepted too).
        unit: unit of `kd`: one of M, mM, uM (or µM), nM, pM, fM.

    Returns:
        A float for a scalar input, else a float64 array of the same shape.

    Raises:
        ValueError: on an unknown unit, or a KD that is zero, negative or not finite (naming its index).
    """
    values, scalar = _checked_kd(kd, unit)
    pkd = -np.log10(values) - np.log10(KD_UNITS[unit])
    return float(pkd) if scalar else pkd


def check_kd_unit(unit: str) -> None:
    """Raise a `ValueError` listing `KD_UNITS` for a unit not among them."""
    if unit not in KD_UNITS:
        raise ValueError(f"unknown KD unit {unit!r}; choose one of: {', '.join(KD_UNITS)}")


def _checked_kd(kd, unit: str) -> tuple[np.ndarray, bool]:
    """`kd` as a float64 array (in `unit`) and whether it was a scalar; raises on an unknown unit or a bad KD."""
    check_kd_unit(unit)
    values = to_numpy(kd, np.float64)
    scalar = values.ndim == 0
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0]) if values.ndim else ()
        where = "" if scalar else f" at index {index[0] if len(index) == 1 else index}"
        raise ValueError(
            f"KD{where} is {float(values[index])!r} {unit}: a dissociation constant must be a "
            "positive finite number; drop or fix that measurement"
        )
    return values, scalar


# the epsilon the study's reference code adds to KD (in molar) before its logarithm
REFERENCE_KD_EPSILON = 1e-10


def kd_to_reference_label(kd: float | Sequence[float] | np.ndarray, unit: str = "M") -> float | np.ndarray:
    """The label the study's reference code trains on: `|log10(KD + 1e-10)|` with KD in molar.

    For comparing RMSE or Pearson with the study's published figures only; never the default (use `kd_to_pkd`).
    Taken from Proteinea/ppiseq (`ppiseq/data_adapters/preprocessing.py`, `log_transform_labels` with
    `label_transform_config: {log_base: 10, eps: 1e-10}` in `training/config/train_config.yaml`). Against the exact
    pKd it:

    - saturates near 10: 1 pM gives 9.996 and 1 fM 10.000 (pKd 12 and 15), 0.1 nM gives 9.699 (pKd 10);
    - flips sign above 1 M: 10 M gives +1 where pKd is -1, so a very weak binder scores like a 0.1 M one;
    - agrees with pKd to within 0.05 from about 1 nM up to 1 M.

    Spearman is unchanged wherever all KDs lie between 0 and 1 M (the transform is monotone there).

    Args:
        kd: one dissociation constant or an array of them (any shape; torch tensors are accepted too).
        unit: unit of `kd`: one of M, mM, uM (or µM), nM, pM, fM.

    Returns:
        A float for a scalar input, else a float64 array of the same shape.

    Raises:
        ValueError: on an unknown unit, or a KD that is zero, negative or not finite (naming its index).
    """
    values, scalar = _checked_kd(kd, unit)
    label = np.abs(np.log10(values * KD_UNITS[unit] + REFERENCE_KD_EPSILON))
    return float(label) if scalar else label


# label transforms by name: each maps a KD (and its unit) to a regression label
LABEL_TRANSFORMS = {"pkd": kd_to_pkd, "reference": kd_to_reference_label}


def get_label_transform(name: str):
    """The label transform registered under `name` in `LABEL_TRANSFORMS` (`"pkd"`: exact -log10 KD, the default;
    `"reference"`: the study's `|log10(KD + 1e-10)|`, for comparison with published figures only).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in LABEL_TRANSFORMS:
        raise ValueError(f"unknown label transform {name!r}; choose one of: {', '.join(LABEL_TRANSFORMS)}")
    return LABEL_TRANSFORMS[name]
