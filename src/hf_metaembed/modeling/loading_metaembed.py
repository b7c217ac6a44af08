"""Loading backbones by reference: what `from_backbones` and a checkpoint saved without backbone weights
(`save_pretrained(d, save_backbone_weights=False)`) read, with errors that say where they looked and how to point
elsewhere, and a check that the weights found are the ones the checkpoint was saved with (its fingerprints).

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its siblings.
"""

import os

import torch
from transformers import PreTrainedModel
from transformers.utils import logging

from .backbones import BackboneNotFoundError, build_backbone, load_backbone, looks_local
from .configuration_metaembed import MetaEmbedConfig, backbone_hidden_size, backbone_num_layers
from .safe_files import PICKLE_WEIGHTS, SAFE_WEIGHTS, BackboneMismatchError, find_file, weights_sha256

logger = logging.get_logger(__name__)


def _has_only_pickle_weights(name: str, revision: str | None) -> bool:
    """Whether the backbone at `name` has pickle weights and no safetensors (looked up without downloading)."""

    def has(filename: str) -> bool:
        found = find_file(
            os.path.expanduser(name), filename, revision=revision, _raise_exceptions_for_connection_errors=False
        )
        return found is not None

    return not has(SAFE_WEIGHTS) and any(has(filename) for filename in PICKLE_WEIGHTS)


def load_backbone_safely(
    name: str, revision: str | None, index: int, allow_pickle: bool, how_to_point: str = "", **kwargs
) -> PreTrainedModel:
    """`load_backbone`, with errors that name the backbone, where it was looked for and the way out.

    A missing folder names the absolute path looked at plus `how_to_point` (the backbone-free loader's
    `backbone_paths` hint); a backbone with only pickle weights names `allow_pickle=True`, and only then.
    """
    if how_to_point and looks_local(name) and not os.path.isdir(os.path.expanduser(name)):
        where = os.path.abspath(os.path.expanduser(name))
        raise BackboneNotFoundError(
            f"backbone {index} ({name}) was not found: there is no folder {where}; {how_to_point}"
        )
    try:
        return load_backbone(name, revision, index, **kwargs)
    except BackboneNotFoundError as error:
        if not how_to_point:
            raise
        where = os.path.abspath(os.path.expanduser(name))
        raise BackboneNotFoundError(f"{error}; no folder {where} either; {how_to_point}") from error
    except OSError as error:
        if not allow_pickle and kwargs.get("use_safetensors") and _has_only_pickle_weights(name, revision):
            raise OSError(
                f"backbone {index} ({name}) has only pickle weights ({PICKLE_WEIGHTS[0]}), no safetensors: "
                "unpickling can run arbitrary code, so it is refused by default; if you trust it, pass "
                "allow_pickle=True"
            ) from error
        if how_to_point:
            raise OSError(f"backbone {index} ({name}) could not be loaded ({error}); {how_to_point}") from error
        raise


def backbone_locations(config: MetaEmbedConfig, backbone_paths: dict | None) -> list[str]:
    """Where each backbone of a backbone-free checkpoint is read from: its stored name, unless `backbone_paths` maps
    its index (or its stored name) to another folder or Hub id."""
    names = config.backbone_names
    overrides = {}
    for key, path in (backbone_paths or {}).items():
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(names):
            overrides[key] = os.fspath(path)
        elif isinstance(key, str) and key in names:
            overrides[names.index(key)] = os.fspath(path)
        else:
            choices = ", ".join(f"{i} or {name!r}" if name else str(i) for i, name in enumerate(names))
            raise ValueError(f"backbone_paths names no backbone of this checkpoint: {key!r}; use one of: {choices}")
    locations = []
    for index, name in enumerate(names):
        location = overrides.get(index, name)
        if location is None:
            raise ValueError(
                f"backbone {index} has no stored name, so this checkpoint (saved without backbone weights) cannot "
                f"find it; pass from_pretrained(..., backbone_paths={{{index}: 'path/or/hub-id'}})"
            )
        locations.append(location)
    return locations


def how_to_point(index: int) -> str:
    """The fix for a backbone a backbone-free checkpoint cannot find, named for backbone `index`."""
    return (
        "this checkpoint was saved without backbone weights and reads each backbone from its stored name; point to "
        f"where it is now with from_pretrained(folder, backbone_paths={{{index}: 'path/or/hub-id'}}) (keys: backbone "
        "index or stored name)"
    )


def check_backbone_shapes(config: MetaEmbedConfig, index: int, backbone: PreTrainedModel, location: str) -> None:
    """One clear error when the backbone found is not shaped like the one the checkpoint was saved with (another
    family, hidden size or depth), before any weight is merged."""
    label = f"backbone {index} ({config.backbone_names[index]})"
    found_at = f" found at {location}" if location != config.backbone_names[index] else ""
    expected_config = config.get_backbone_config(index)
    fix = f"point backbone_paths={{{index}: ...}} at the backbone this checkpoint was saved with"
    found, expected = backbone.config, expected_config
    if found.model_type != expected.model_type:
        raise BackboneMismatchError(
            f"{label}{found_at} has model type {found.model_type!r}, but this checkpoint was saved with a backbone "
            f"of model type {expected.model_type!r}; {fix}"
        )
    for what, read in (("hidden size", backbone_hidden_size), ("number of layers", backbone_num_layers)):
        if read(found) != read(expected):
            raise BackboneMismatchError(
                f"{label}{found_at} has {what} {read(found)}, but this checkpoint's layers were trained on a "
                f"backbone with {what} {read(expected)}; {fix}"
            )
    with torch.device("meta"):
        if config.backbones[index].get("trust_remote_code"):  # its own classes, as loaded
            stored = {k: v for k, v in config.backbones[index]["config"].items() if k != "model_type"}
            skeleton = type(backbone)(type(backbone.config)(**stored))
        else:
            skeleton = build_backbone(expected_config)
    expected_shapes = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    found_shapes = {name: tuple(t.shape) for name, t in backbone.state_dict().items()}
    shared = expected_shapes.keys() & found_shapes.keys()
    differ = sorted(name for name in shared if expected_shapes[name] != found_shapes[name])
    missing = sorted(expected_shapes.keys() - found_shapes.keys())
    if differ or missing:
        example = (
            f"{differ[0]} is {list(found_shapes[differ[0]])}, expected {list(expected_shapes[differ[0]])}"
            if differ
            else f"no {missing[0]}"
        )
        raise BackboneMismatchError(
            f"{label}{found_at} is not shaped like the backbone this checkpoint was saved with ({len(differ)} tensors "
            f"differ, {len(missing)} missing; e.g. {example}); {fix}"
        )


def verify_fingerprint(config: MetaEmbedConfig, index: int, backbone: PreTrainedModel, location: str) -> None:
    """Check backbone `index` against the fingerprint its checkpoint recorded (nothing to check for a checkpoint
    saved before fingerprints existed). Raises `BackboneMismatchError` naming both fingerprints and the override."""
    name = config.backbone_names[index]
    record = config.backbones[index].get("fingerprint")
    if not record:
        return
    found = weights_sha256(backbone)
    if found != record["sha256"]:
        raise BackboneMismatchError(
            f"backbone {index} ({name}) found at {location} is not the backbone this checkpoint was saved with: its "
            f"weights have fingerprint sha256:{found}, the checkpoint expects sha256:{record['sha256']} (the folder "
            "or Hub repo changed since the save). Point to the original weights with "
            f"from_pretrained(folder, backbone_paths={{{index}: 'path/or/hub-id'}}), or, if these weights are the "
            "ones you want, load with verify_backbones=False"
        )


def fetch_backbones(
    config: MetaEmbedConfig,
    backbone_paths: dict | None,
    verify: bool,
    allow_pickle: bool,
    use_safetensors: bool | None,
) -> list[PreTrainedModel]:
    """Load every backbone of a backbone-free checkpoint, checked against what it was saved with.

    Each backbone is read from its stored name and revision, or from `backbone_paths` (then the config's record
    takes the new location, so the next save refers to it), in the dtype the saved model ran it in. Its family,
    hidden size, depth and tensor shapes must match the stored config, and with `verify` its weights must match the
    stored fingerprint (a checkpoint that records none, saved before fingerprints existed, loads unverified with one
    info line).
    """
    locations = backbone_locations(config, backbone_paths)
    unverified = [index for index, record in enumerate(config.backbones) if not record.get("fingerprint")]
    if verify and unverified:
        logger.info(
            f"this checkpoint records no fingerprint of backbones {unverified} (it was saved before fingerprints "
            "existed), so their weights are used as found, unverified"
        )
    backbones = []
    for index, location in enumerate(locations):
        record = config.backbones[index]
        moved = location != record["name"]
        revision = None if moved else record["revision"]
        extra = {"use_safetensors": use_safetensors}
        if record.get("trust_remote_code"):  # its own code, trusted when the model was built, at its pinned revision
            extra.update(trust_remote_code=True, code_revision=record.get("code_revision"))
        saved_dtype = (record.get("fingerprint") or {}).get("dtype")
        if saved_dtype:  # read it in the dtype the saved model ran it in
            extra["dtype"] = getattr(torch, saved_dtype)
        backbone = load_backbone_safely(location, revision, index, allow_pickle, how_to_point(index), **extra)
        check_backbone_shapes(config, index, backbone, location)
        if verify:
            verify_fingerprint(config, index, backbone, location)
        if moved:
            logger.info(f"backbone {index} ({record['name']}) read from {location}")
            record["name"], record["revision"] = location, None
        backbones.append(backbone)
    return backbones


__all__ = [
    "backbone_locations",
    "check_backbone_shapes",
    "fetch_backbones",
    "load_backbone_safely",
    "verify_fingerprint",
]
