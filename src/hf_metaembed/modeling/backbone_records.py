"""One record per backbone in `MetaEmbedConfig.backbones`: its fields, how a record is filled in (from a record or
from release 0.1's parallel lists), and the backbone config it stores (rebuilt by its family record).

Data only (configuration code, copied next to a saved model for `trust_remote_code`): imports transformers, the
standard library and the family records.
"""

import json

from transformers import PreTrainedConfig

from .backbone_families import backbone_family


def backbone_config_from_dict(config_dict: dict) -> PreTrainedConfig:
    """Rebuild one backbone's config from the dict stored in its record (`MetaEmbedConfig.backbones[i]["config"]`),
    as its family record says (`AutoConfig.for_model` unless the family names a config class)."""
    config_dict = dict(config_dict)
    model_type = config_dict.pop("model_type", None)
    if model_type is None:
        raise ValueError("a stored backbone config has no `model_type`; re-create the model with `from_backbones`")
    try:
        return backbone_family(model_type).config_from_dict(model_type, config_dict)
    except (KeyError, ValueError):
        if "auto_map" not in config_dict:
            raise
        # a backbone with its own code: its config class comes with its code; its sizes are read off a plain config
        config = PreTrainedConfig(**config_dict)
        config.model_type = model_type
        return config


def backbone_hidden_size(config: PreTrainedConfig) -> int:
    """Width of a backbone's hidden states (`d_model` for T5-family encoders)."""
    for name in ("hidden_size", "d_model", "dim"):
        size = getattr(config, name, None)
        if isinstance(size, int):
            return size
    raise ValueError(f"cannot tell the hidden size of a {config.model_type!r} backbone from its config")


def backbone_num_layers(config: PreTrainedConfig) -> int:
    """Number of transformer layers; the backbone gives this many hidden states plus its embedding output."""
    for name in ("num_hidden_layers", "num_layers", "n_layers"):
        layers = getattr(config, name, None)
        if isinstance(layers, int):
            return layers
    return 0


def storable(config: PreTrainedConfig | dict) -> dict:
    """A backbone config as the JSON-safe dict that is saved (labels and versions do not describe a backbone)."""
    config_dict = config.to_dict() if isinstance(config, PreTrainedConfig) else dict(config)
    for key in ("id2label", "label2id", "transformers_version"):
        config_dict.pop(key, None)
    return json.loads(json.dumps(config_dict))


# the fields of one backbone's record in `MetaEmbedConfig.backbones`
BACKBONE_RECORD_KEYS = (
    "name",
    "revision",
    "unit_type",
    "layer",
    "window_size",
    "config",
    "fingerprint",
    "sentence_pooling",
    "pooling",
    "trust_remote_code",
    "code_revision",
    "code_sha256",
    "code_files",
)
# release 0.1's parallel lists (keyword arguments, stored config keys, attributes) and the record field each one holds
LEGACY_BACKBONE_LISTS = {
    "backbone_configs": "config",
    "backbone_names": "name",
    "backbone_revisions": "revision",
    "backbone_unit_types": "unit_type",
    "backbone_layers": "layer",
    "backbone_poolings": "pooling",  # 0.2, in the same form
}


def _backbone_record(entry: dict, index: int) -> dict:
    """One backbone's record with every field present (release 0.1's defaults for those not given)."""
    if not isinstance(entry, dict) or entry.get("config") is None:
        raise ValueError(
            f"backbones[{index}] must be a dict with a 'config' (the backbone's config dict with its model_type), got "
            f"{entry!r:.80}"
        )
    unknown = sorted(set(entry) - set(BACKBONE_RECORD_KEYS))
    if unknown:
        raise ValueError(
            f"backbones[{index}] has unknown key(s) {unknown}; a backbone record holds: "
            f"{', '.join(BACKBONE_RECORD_KEYS)}"
        )
    config = storable(entry["config"])
    return {
        "name": entry.get("name"),
        "revision": entry.get("revision"),
        "unit_type": entry.get("unit_type") or "word",
        "layer": "last" if entry.get("layer") is None else entry["layer"],
        "window_size": entry.get("window_size"),
        "config": config,
        "fingerprint": entry.get("fingerprint"),
        "sentence_pooling": entry.get("sentence_pooling"),
        # at level="sequence", the pooling of this backbone's tokens the user chose (None: the default rule)
        "pooling": entry.get("pooling"),
        # a backbone with its own code (remote_code_backbones.py): trusted by the user, its pinned code revision,
        # and the digest and names of its code files saved beside the model
        "trust_remote_code": bool(entry.get("trust_remote_code", False)),
        "code_revision": entry.get("code_revision"),
        "code_sha256": entry.get("code_sha256"),
        "code_files": entry.get("code_files"),
    }


def backbone_records(backbones: list | None, legacy: dict[str, list]) -> list[dict]:
    """The per-backbone records from `backbones` and/or release 0.1's parallel lists; a list given beside `backbones`
    overrides that field of every record (as a stored config updated with `backbone_layers=[...]` expects)."""
    if backbones is not None:
        entries = list(backbones)
    else:
        entries = [{"config": config} for config in legacy.get("backbone_configs") or []]
    records = [_backbone_record(entry, index) for index, entry in enumerate(entries)]
    for field, key in LEGACY_BACKBONE_LISTS.items():
        values = legacy.get(field)
        if not values or (backbones is None and field == "backbone_configs"):
            continue
        values = list(values)
        if len(values) != len(records):
            raise ValueError(f"{field} has {len(values)} entries for {len(records)} backbone configs")
        for record, value in zip(records, values):
            record[key] = storable(value) if key == "config" else value
    return records


# how a backbone that reads a list of layers combines them (`MetaEmbedConfig.layer_combine`)
LAYER_COMBINES = ("mean", "concat")
# layer choices that read several hidden states: a learned scalar mix, a learned per-unit layer attention
MULTI_LAYER_CHOICES = ("mix", "attention")


def check_layer(layer, index: int) -> None:
    """Raise a `ValueError` naming backbone `index` unless `layer` is a valid layer choice: `"last"`, an int index,
    `"mix"`, `"attention"`, or a non-empty list of distinct int indices."""
    if layer in ("last", *MULTI_LAYER_CHOICES) or (isinstance(layer, int) and not isinstance(layer, bool)):
        return
    if isinstance(layer, list | tuple) and layer:
        ints = all(isinstance(i, int) and not isinstance(i, bool) for i in layer)
        if ints and len(set(layer)) == len(layer):
            return
    raise ValueError(
        f"unknown layer {layer!r} for backbone {index}; choose 'last', an integer index, a list of distinct indices "
        "(combined by layer_combine), 'mix' or 'attention'"
    )


def layers_read(layer) -> int | None:
    """How many hidden states a list choice reads (None for the other choices)."""
    return len(layer) if isinstance(layer, list | tuple) else None


def read_size(layer, hidden_size: int, layer_combine: str) -> int:
    """Width of a backbone's states after reading: its hidden size, times the layers a list concatenates."""
    count = layers_read(layer)
    return hidden_size * count if count and layer_combine == "concat" else hidden_size


def record_field(key: str) -> property:
    """Release 0.1's list attribute for one field of the backbone records (`config.backbone_layers`): reading gives a
    new list, assigning a list of one value per backbone sets that field of every record."""

    def read(self) -> list:
        return [record[key] for record in self.backbones]

    def write(self, values: list) -> None:
        values = list(values)
        if len(values) != len(self.backbones):
            raise ValueError(f"got {len(values)} values for {len(self.backbones)} backbones; give one per backbone")
        for record, value in zip(self.backbones, values):
            record[key] = storable(value) if key == "config" else value

    return property(read, write, doc=f'`[record["{key}"] for record in backbones]` (release 0.1\'s list).')


__all__ = [
    "BACKBONE_RECORD_KEYS",
    "LAYER_COMBINES",
    "LEGACY_BACKBONE_LISTS",
    "MULTI_LAYER_CHOICES",
    "backbone_config_from_dict",
    "backbone_hidden_size",
    "backbone_num_layers",
    "check_layer",
    "layers_read",
    "read_size",
    "backbone_records",
    "record_field",
    "storable",
]
