"""Checks of what a user hands `forward` directly: precomputed `backbone_states` and `labels`.

Each check either converts the input where its meaning is unambiguous (numpy arrays and nested lists become tensors,
floating-point states take the model's dtype and device, whole-number class ids become integers) or raises an error
that names the backbone or sample, what was given and what was expected, instead of a torch error from deep inside a
layer. The rules are listed in docs/RELIABILITY.md.

Model code (copied next to a saved model for `trust_remote_code`): imports torch and the standard library only.
"""

import torch

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def as_tensor(value, what: str) -> torch.Tensor:
    """`value` as a tensor: tensors as they are; numpy arrays, numbers and (nested) lists of numbers converted."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, str | bytes | dict | set) or value is None:
        raise TypeError(f"{what} must be numbers (a tensor, numpy array or list); got {type(value).__name__}")
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{what} cannot be read as numbers (a tensor, numpy array or list of equal-length rows): {error}"
        ) from None


# ------------------------------------------------------------------------------------------- backbone states


def check_unit_mask(unit_mask) -> torch.Tensor:
    """`unit_mask` as a `(segments, units)` integer tensor of 0s and 1s."""
    unit_mask = as_tensor(unit_mask, "unit_mask")
    if unit_mask.dim() != 2:
        raise ValueError(
            f"unit_mask must be (segments, units) with 1 for real units; got shape {tuple(unit_mask.shape)}"
        )
    bad = (unit_mask != 0) & (unit_mask != 1)
    if bool(bad.any()):
        segments = bad.any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"unit_mask of segments {segments} holds values other than 0 and 1; mark real units with 1")
    return unit_mask if unit_mask.dtype == torch.long else unit_mask.long()


def check_backbone_states(
    config,
    backbone_states,
    unit_mask,
    mix_layers: dict[int, int],
    device: torch.device | None,
    dtype: torch.dtype | None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Precomputed backbone states as `forward` reads them, checked against the model's backbones.

    Args:
        config: the model's `MetaEmbedConfig`.
        backbone_states: one entry per backbone: `(segments, units, d_i)`, or `(segments, units, layers, d_i)` for a
            backbone with `layer="mix"` at unit level; at `level="sequence"`, `(segments, 1, d_i)` or `(segments,
            d_i)`. Tensors, numpy arrays or nested lists.
        unit_mask: `(segments, units)`.
        mix_layers: per `"mix"` backbone index, the number of hidden states its mix weighs.
        device, dtype: where and in what floating-point dtype the model's fusion computes (None: leave as given).

    Returns:
        The states as `(segments, units[, layers], d_i)` tensors on `device` in `dtype`, and the unit mask on the
        same device.
    """
    count = config.num_backbones
    names = config.backbone_names
    if isinstance(backbone_states, torch.Tensor) or not isinstance(backbone_states, list | tuple):
        shape = f" of shape {tuple(backbone_states.shape)}" if isinstance(backbone_states, torch.Tensor) else ""
        raise TypeError(
            f"backbone_states must be a list with one (segments, units, d_i) tensor per backbone ({count}); got a "
            f"{type(backbone_states).__name__}{shape}"
        )
    if len(backbone_states) != count:
        listed = ", ".join(f"{i} ({name})" for i, name in enumerate(names))
        raise ValueError(
            f"backbone_states holds {len(backbone_states)} tensors; this model has {count} backbones ({listed}): give "
            "one per backbone, in that order"
        )
    unit_mask = check_unit_mask(unit_mask)
    segments, units = unit_mask.shape
    sequence_level = config.level == "sequence"
    checked = []
    for index, (states, width) in enumerate(zip(backbone_states, config.backbone_hidden_sizes)):
        what = f"backbone_states[{index}] (backbone {index}, {names[index]})"
        states = as_tensor(states, what)
        if not states.is_floating_point():
            raise TypeError(
                f"{what} holds {str(states.dtype).removeprefix('torch.')} values; backbone states are floating-point "
                "numbers (float32, float64, float16 or bfloat16)"
            )
        if sequence_level and states.dim() == 2:
            states = states.unsqueeze(1)  # (segments, d_i): one pooled vector per segment
        axes = {"segments": segments, "units": 1 if sequence_level else units}
        if index in mix_layers and not sequence_level:
            axes["layers"] = mix_layers[index]
        axes["d_i"] = width
        _check_axes(what, states, axes, index)
        if device is None:
            device = states.device
        checked.append(states.to(device=device, dtype=dtype or states.dtype))
    return checked, unit_mask.to(device)


def _check_axes(what: str, states: torch.Tensor, axes: dict[str, int], index: int) -> None:
    layout = f"({', '.join(axes)}) = {tuple(axes.values())}"
    if states.dim() != len(axes):
        hint = " (layer='mix': one state per hidden layer)" if "layers" in axes else ""
        raise ValueError(f"{what} has shape {tuple(states.shape)}; expected {layout}{hint}")
    for (axis, expected), found in zip(axes.items(), states.shape):
        if found == expected:
            continue
        if axis == "d_i":
            reason = f"holds {found}-dim states but backbone {index} gives {expected}-dim states (its hidden size)"
        elif axis == "layers":
            reason = f"holds {found} layers but backbone {index} (layer='mix') gives {expected} hidden states"
        elif axis == "units":
            reason = (
                f"holds {found} units per segment but unit_mask has {expected}; pad every backbone's states to the "
                "unit_mask of the same batch"
            )
        else:
            reason = f"holds {found} segments but unit_mask has {expected}"
        raise ValueError(f"{what} {reason}; expected {layout}, got {tuple(states.shape)}")


# ---------------------------------------------------------------------------------------------------- labels


def check_label_count(labels: torch.Tensor, samples: int | None = None, what: str = "samples") -> None:
    """One label (row) per sample, and no NaN or infinite value."""
    count = labels.shape[0] if labels.dim() else 1
    if samples is not None and count != samples:
        raise ValueError(
            f"labels hold {count} entries but the batch has {samples} samples; give one label (row) per sample, in "
            "the order of the inputs"
        )
    if labels.is_floating_point() and not torch.isfinite(labels).all():
        bad = (~torch.isfinite(labels)).reshape(count, -1).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"labels of {what} {bad} are NaN or infinite; drop or fix those {what}")


def check_classes(labels: torch.Tensor, num_labels: int, what: str = "samples") -> None:
    """Class ids outside 0..num_labels-1 (-100: no label) raise an error naming the rows, not a torch index error."""
    bad = (labels != -100) & ((labels < 0) | (labels >= num_labels))
    if bool(bad.any()):
        rows = bad.reshape(bad.shape[0] if bad.dim() else 1, -1).any(dim=1).nonzero().flatten().tolist()
        values = sorted(set(labels[bad].tolist()))[:5]
        raise ValueError(
            f"labels of {what} {rows} hold class ids {values} outside 0..{num_labels - 1} (num_labels={num_labels}); "
            "fix the labels or the model's num_labels"
        )


def class_ids(labels: torch.Tensor, what: str = "samples") -> torch.Tensor:
    """Labels as `long` class ids: integer and boolean labels directly, floating-point ones only when every value is
    a whole number (e.g. 0.0/1.0 read from a table)."""
    if labels.is_floating_point():
        fractional = labels != labels.round()
        if bool(fractional.any()):
            rows = fractional.reshape(labels.shape[0] if labels.dim() else 1, -1).any(dim=1).nonzero().flatten()
            raise ValueError(
                f"labels of {what} {rows.tolist()} are not whole numbers, so they are not class ids; for regression "
                "build the model with num_labels=1 (or problem_type='regression')"
            )
    elif labels.is_complex():
        raise TypeError("labels are complex numbers; give class ids or numbers")
    return labels.long()


def infer_problem_type(num_labels: int, labels: torch.Tensor, samples: int) -> str:
    """What a first batch of labels means when the config names no `problem_type`, read from the labels' shape
    (transformers reads the dtype, which makes float class ids multi-label): one label per sample for
    `num_labels == 1` is regression; `(samples, num_labels)` rows are multi-label; one class id per sample is
    single-label."""
    if num_labels == 1:
        return "regression"
    if labels.dim() == 2 and tuple(labels.shape) == (samples, num_labels):
        return "multi_label_classification"
    return "single_label_classification"


def sequence_labels(problem_type: str, num_labels: int, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """`labels` checked against `problem_type` and converted for its loss.

    Regression: `(samples,)` or `(samples, num_labels)` numbers, in the logits' dtype. Single-label: `(samples,)` (or
    `(samples, 1)`) class ids, as `long`. Multi-label: `(samples, num_labels)` targets in [0, 1], in the logits'
    dtype. A batch whose labels contradict the model's `problem_type` is an error that says so.
    """
    samples = logits.shape[0]
    shape = tuple(labels.shape)
    fixed = (
        f"this model's problem_type is {problem_type!r} (set when it was built or by its first batch of labels, "
        "and kept: it is saved with the model)"
    )
    if problem_type == "regression":
        if labels.numel() != samples * num_labels or (labels.dim() == 2 and shape[1] != num_labels):
            raise ValueError(
                f"regression labels must be (samples,) or (samples, num_labels) = ({samples}, {num_labels}); got "
                f"shape {shape}"
            )
        if labels.is_complex():
            raise TypeError("labels are complex numbers; regression takes real numbers")
        return labels.to(logits.dtype).reshape(logits.squeeze(-1).shape)
    if problem_type == "single_label_classification":
        if labels.dim() == 2 and shape == (samples, num_labels) and num_labels > 1:
            raise ValueError(
                f"labels of shape {shape} are multi-label rows (one 0/1 per class), but {fixed}; give one class id "
                "per sample, or build the model with problem_type='multi_label_classification'"
            )
        if labels.numel() != samples or labels.dim() > 2:
            raise ValueError(
                f"single-label classification takes one class id per sample, (samples,) = ({samples},); got shape "
                f"{shape}"
            )
        labels = class_ids(labels).reshape(samples)
        check_classes(labels, num_labels)
        return labels
    if problem_type == "multi_label_classification":
        if shape != (samples, num_labels):
            raise ValueError(
                f"multi-label classification takes one row of {num_labels} targets (0 or 1) per sample, (samples, "
                f"num_labels) = ({samples}, {num_labels}); got shape {shape}"
                + (f". One class id per sample is single-label, but {fixed}" if labels.dim() <= 1 else "")
            )
        if labels.is_complex():
            raise TypeError("labels are complex numbers; multi-label targets are 0 or 1")
        outside = (labels < 0) | (labels > 1)
        if bool(outside.any()):
            rows = outside.any(dim=1).nonzero().flatten().tolist()
            raise ValueError(
                f"multi-label targets of samples {rows} lie outside [0, 1]; give 1 for each class a sample has, "
                "0 for the others"
            )
        return labels.to(logits.dtype)
    raise ValueError(f"unknown problem_type {problem_type!r}; choose one of: {', '.join(PROBLEM_TYPES)}")


def token_labels(labels, logits: torch.Tensor, unit_mask: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Per-unit labels `(segments, units)` as `long` class ids, -100 on padded units; errors name the segments."""
    labels = as_tensor(labels, "labels").to(logits.device)
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"token labels must have shape (segments, units) = {tuple(logits.shape[:2])}, one per unit (-100 for "
            f"none); got {tuple(labels.shape)}"
        )
    labels = labels.masked_fill(unit_mask.to(labels.device) == 0, -100)
    check_label_count(labels, what="segments")
    labels = class_ids(labels, what="segments")
    check_classes(labels, num_labels, what="segments")
    return labels


__all__ = [
    "PROBLEM_TYPES",
    "as_tensor",
    "check_backbone_states",
    "check_classes",
    "check_label_count",
    "check_unit_mask",
    "class_ids",
    "infer_problem_type",
    "sequence_labels",
    "token_labels",
]
