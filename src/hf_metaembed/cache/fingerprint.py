"""The fingerprint of a cache: everything that decides the backbone states it stores, and how two fingerprints differ.

Per backbone its name, revision, weights hash, dtype, layer, tokenizer hash (and, for a backbone that runs its own
code, that code's hash); the alignment settings; the processor settings; and `ALIGNMENT_VERSION`. A cache is used
only with a model and processor of the same fingerprint.
"""

import hashlib
import json
import tempfile

import torch

from .._utils import metaembed_of
from ..modeling import safe_files
from ..modeling.modeling_metaembed import MetaEmbedModel
from ..modeling.processing_metaembed import MetaEmbedProcessor
from ..modeling.reading import READING_VERSION
from ..modeling.remote_code_backbones import runs_own_code, save_backbone_code
from .errors import FeatureCacheError, UncacheableModelError

# the reading stage's version (bumped there whenever alignment or layer selection changes what it returns)
ALIGNMENT_VERSION = READING_VERSION
# `model_types` picks each backbone's family record, already fingerprinted per backbone as its `model_type`
_PROCESSOR_FIELDS_WITHOUT_EFFECT = {
    "processor_class",
    "backbone_names",
    "architecture",
    "per_unit_labels",
    "auto_map",
    "model_types",
}


def weights_sha256(module: torch.nn.Module) -> str:
    """The backbone weights' digest (`modeling.safe_files.weights_sha256`, the one a backbone-free checkpoint records
    too), with a weight not in memory reported as a cache error."""
    try:
        return safe_files.weights_sha256(module)
    except ValueError as error:
        raise FeatureCacheError(f"{error}; load the model fully first") from None


def tokenizer_sha256(tokenizer) -> str:
    """sha256 of what decides a tokenizer's ids: its vocabulary, special tokens and case/prefix-space handling."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0])),
        "special_tokens": sorted(tokenizer.all_special_tokens),
        "do_lower_case": getattr(tokenizer, "do_lower_case", None),
        "add_prefix_space": getattr(tokenizer, "add_prefix_space", None),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def cacheable_base_model(model) -> MetaEmbedModel:
    """The `MetaEmbedModel` of `model`, after checking its backbone states can be cached exactly.

    Raises `UncacheableModelError` when a backbone is trainable, or when the reading stage says its output cannot be
    reused exactly (`BackboneReader.cache_problem`: a learned part inside reading, special tokens as units).
    """
    base = metaembed_of(model)
    config = base.config
    for index, backbone in enumerate(base.backbones):
        if any(parameter.requires_grad for parameter in backbone.parameters()):
            raise UncacheableModelError(
                f"backbone {index} ({config.backbone_names[index]}) is trainable (unfrozen or with adapters): its "
                "states change while training and cannot be cached; call model.freeze_backbones() or train online"
            )
    problem = base.reader.cache_problem()
    if problem is not None:
        raise UncacheableModelError(problem)
    return base


def model_fingerprint(model, processor: MetaEmbedProcessor) -> dict:
    """Everything that decides the cached states: per backbone its name, revision, weights hash, dtype, layer and
    tokenizer; the alignment settings; the processor settings; and `ALIGNMENT_VERSION`."""
    base = cacheable_base_model(model)
    config = base.config
    if len(processor.tokenizers) != config.num_backbones:
        raise FeatureCacheError(
            f"the processor has {len(processor.tokenizers)} tokenizers for {config.num_backbones} backbones; use the "
            "processor built for this model"
        )
    backbones = []
    for index, backbone in enumerate(base.backbones):
        parameter = next(backbone.parameters(), None)
        backbones.append(
            {
                "name": config.backbone_names[index],
                "revision": config.backbone_revisions[index],
                "model_type": backbone.config.model_type,
                "weights_sha256": weights_sha256(backbone),
                "dtype": str(parameter.dtype).removeprefix("torch.") if parameter is not None else None,
                "layer": config.backbone_layers[index],
                "tokenizer_sha256": tokenizer_sha256(processor.tokenizers[index]),
            }
        )
        if runs_own_code(config.backbones[index]):  # its own modelling code decides its states too
            backbones[-1]["code_sha256"] = _own_code_sha256(backbone)
    alignment = base.reader.describe()  # what the reading stage's output depends on, as the reader says
    # every processor setting but those that cannot change a segment's tokens (a new setting counts by default)
    settings = {k: v for k, v in processor.to_dict().items() if k not in _PROCESSOR_FIELDS_WITHOUT_EFFECT}
    return {"backbones": backbones, "alignment": alignment, "processor": settings}


def _own_code_sha256(backbone) -> str:
    """The digest of the code files of a backbone that runs its own code, as a saved model records it."""
    with tempfile.TemporaryDirectory() as folder:
        return save_backbone_code(backbone, folder)


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return flat
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        flat = {f"{prefix}.count": len(value)}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}[{index}]"))
        return flat
    return {prefix: value}


def fingerprint_differences(cached: dict, current: dict) -> list[str]:
    """Human-readable lines `field: cache has X, this model has Y` for every field that differs."""
    old, new = _flatten(cached), _flatten(current)
    lines = []
    for field in sorted(set(old) | set(new)):
        if old.get(field, "<absent>") != new.get(field, "<absent>"):
            lines.append(
                f"{field}: cache has {old.get(field, '<absent>')!r}, this model has {new.get(field, '<absent>')!r}"
            )
        if len(lines) == 12:
            lines.append("...")
            break
    return lines


__all__ = [
    "ALIGNMENT_VERSION",
    "cacheable_base_model",
    "fingerprint_differences",
    "model_fingerprint",
    "tokenizer_sha256",
    "weights_sha256",
]
