"""Backbones that ship their own modelling code (an `auto_map` in their `config.json`, loaded by transformers with
`trust_remote_code`): refused unless the user trusts that backbone (`backbone_trust_remote_code`, never implied by
the outer model's `trust_remote_code`), pinned to a code revision, and saved with their code files beside the
MetaEmbed model (`backbone_<i>_code/`) so a reload, with or without this library, rebuilds them from that code.

A backbone record of such a backbone holds `trust_remote_code: true`, `code_revision` (the revision its code was
read at; None: the weights' revision) and `code_sha256` (a digest of its code files), checked whenever the code is
read again: different code is an error naming the backbone and the fix.

Model code (copied next to a saved model for `trust_remote_code`): imports transformers, the standard library and
its siblings only.
"""

import hashlib
import json
import os

from transformers import PreTrainedConfig, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save, get_class_from_dynamic_module
from transformers.utils import cached_file

from .backbone_families import backbone_family
from .safe_files import find_file

CONFIG_FILE = "config.json"


class RemoteCodeBackboneError(ValueError):
    """A backbone with its own code that was not trusted, or whose code differs from the code it was saved with."""


def code_folder(index: int) -> str:
    """The folder, inside a saved MetaEmbed model, holding backbone `index`'s own code files."""
    return f"backbone_{index}_code"


def trust_flags(flag: bool | list | tuple | None, count: int) -> list[bool]:
    """`backbone_trust_remote_code` as one bool per backbone (one flag for all, or one per backbone)."""
    if flag is None or isinstance(flag, bool):
        return [bool(flag)] * count
    flags = list(flag)
    if len(flags) != count or not all(isinstance(value, bool) for value in flags):
        raise ValueError(
            f"backbone_trust_remote_code must be True/False or a list of {count} booleans (one per backbone), got "
            f"{flag!r}"
        )
    return flags


def own_code_map(name: str, revision: str | None = None) -> dict | None:
    """The `auto_map` of the backbone's `config.json` (its own code), None when it has none; nothing but that file is
    read (and no code runs)."""
    path = find_file(
        os.path.expanduser(name), CONFIG_FILE, revision=revision, _raise_exceptions_for_connection_errors=False
    )
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    if backbone_family(config.get("model_type")).config_class is not None:
        # a family whose record brings its own classes (the library's static vector tables, or one the user
        # registered): those classes read it, and the folder's code never runs
        return None
    return config.get("auto_map") or None


def check_trusted(name: str, revision: str | None, index: int, trusted: bool) -> bool:
    """Raise `RemoteCodeBackboneError` at once (before transformers could ask "[y/N]") for a backbone with its own
    code that is not trusted; return whether the backbone has its own code."""
    own = own_code_map(name, revision)
    if own and not trusted:
        raise RemoteCodeBackboneError(
            f"backbone {index} ({name}) ships its own modelling code (auto_map {sorted(own)} in its config.json), "
            "which runs on your machine when loaded; if you trust it, pass backbone_trust_remote_code=True (or a "
            f"list with True at position {index}) to from_backbones (CLI: --backbone-trust-remote-code), and pin it "
            "with backbone_code_revisions=[...]. The model's own trust_remote_code never applies to its backbones"
        )
    return bool(own)


def runs_own_code(record: dict) -> bool:
    """Whether the backbone of this `MetaEmbedConfig.backbones` record runs its own code (trusted, with an
    `auto_map`): it is rebuilt from its saved code files, and those are saved beside the model."""
    return bool(record.get("trust_remote_code")) and "auto_map" in record["config"]


def code_sha256(folder: str) -> str:
    """Digest of the Python files of a code folder (names and contents, sorted by name)."""
    digest = hashlib.sha256()
    for filename in sorted(os.listdir(folder)):
        if filename.endswith(".py"):
            digest.update(filename.encode())
            with open(os.path.join(folder, filename), "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()


def save_backbone_code(backbone: PreTrainedModel, folder: str) -> str:
    """Copy a remote-code backbone's code files (its model's and config's modules, with what they import) and its
    config into `folder`; return their `code_sha256`."""
    os.makedirs(folder, exist_ok=True)
    custom_object_save(backbone.config, folder)
    custom_object_save(backbone, folder, config=backbone.config)
    backbone.config.to_json_file(os.path.join(folder, CONFIG_FILE))
    return code_sha256(folder)


def check_code(record: dict, index: int, found: str, where: str) -> None:
    """Refuse code whose digest differs from the one recorded when the model was built."""
    expected = record.get("code_sha256")
    if expected and expected != found:
        raise RemoteCodeBackboneError(
            f"backbone {index} ({record.get('name')}): its code at {where} is not the code this model was built "
            f"with (sha256:{found}, expected sha256:{expected}; revision {record.get('code_revision')!r}); restore "
            "the original code files, or load the backbone's pinned code revision (backbone_code_revisions)"
        )


def build_remote_backbone(record: dict, index: int, source: str | None) -> PreTrainedModel:
    """An empty backbone (weights come from the checkpoint) built from the code files saved beside the MetaEmbed
    model at `source` (a folder or Hub id), checked against the recorded digest."""
    if not source:
        raise RemoteCodeBackboneError(
            f"backbone {index} ({record.get('name')}) runs its own code, which is read from the saved model's "
            f"{code_folder(index)}/ folder; build this model with from_backbones or load it with from_pretrained"
        )
    config_path = cached_file(source, f"{code_folder(index)}/{CONFIG_FILE}")
    folder = os.path.dirname(config_path)
    for filename in sorted(record.get("code_files") or []):  # a Hub repo: fetch every code file into that folder
        cached_file(source, f"{code_folder(index)}/{filename}")
    check_code(record, index, code_sha256(folder), folder)
    with open(config_path, encoding="utf-8") as handle:
        auto_map = json.load(handle)["auto_map"]
    config_class = get_class_from_dynamic_module(auto_map["AutoConfig"], folder)
    model_class = get_class_from_dynamic_module(auto_map["AutoModel"], folder)
    config: PreTrainedConfig = config_class.from_pretrained(folder)
    return model_class(config)


__all__ = [
    "RemoteCodeBackboneError",
    "build_remote_backbone",
    "check_code",
    "check_trusted",
    "code_folder",
    "code_sha256",
    "runs_own_code",
    "own_code_map",
    "save_backbone_code",
    "trust_flags",
]
