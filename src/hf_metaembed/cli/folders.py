"""What the commands check about a saved MetaEmbed folder before loading anything: that it exists, holds a MetaEmbed
config (and a processor), and which pair architecture it has. Reads `config.json` as JSON only, so these checks answer
before torch or transformers is imported (`hf-metaembed embed --model /wrong/folder` fails at once)."""

import json
import os
from pathlib import Path

from .errors import UsageError

PROCESSOR_FILE = "processor_config.json"


def saved_model_type(folder: str | os.PathLike) -> str | None:
    """The `model_type` in `folder/config.json`, or None when `folder` holds no config.json (e.g. a Hub id)."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        return None
    try:
        return json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {str(config_path)!r}: {error}") from None


def saved_architecture(folder: str | os.PathLike) -> str:
    """The pair architecture in a checked model folder's config.json (`single` when unset), read without loading."""
    try:
        return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("architecture", "single")
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the config.json of {str(folder)!r}: {error}") from None


def check_model_folder(folder: str | os.PathLike, require_processor: bool = True) -> Path:
    """`folder` as a path, after checking it holds a saved MetaEmbed model (and, if required, its processor)."""
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(
            f"model folder {str(folder)!r} does not exist; pass a folder written by save_pretrained (build one with "
            "`hf-metaembed build --backbones A,B -o FOLDER`), or name backbones with --backbones"
        )
    if not (path / "config.json").is_file():
        raise UsageError(f"{str(folder)!r} has no config.json; pass a folder written by model.save_pretrained")
    model_type = saved_model_type(path)
    if model_type != "metaembed":
        raise UsageError(
            f"{str(folder)!r} holds a {model_type!r} model, not a MetaEmbed model; use it as a backbone "
            f"(--backbones {folder}), or save a MetaEmbed model over it with `hf-metaembed build --backbones "
            f"{folder} -o FOLDER`"
        )
    if require_processor and not (path / PROCESSOR_FILE).is_file():
        raise UsageError(f"{str(folder)!r} has no {PROCESSOR_FILE}; save it with processor.save_pretrained(folder)")
    return path


def backbone_list(text: str) -> list[str]:
    """`--backbones A,B` as a list of backbone folders or Hub ids."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError("--backbones needs at least one backbone folder or Hub id, e.g. --backbones esm2,prot_t5")
    return names


__all__ = ["PROCESSOR_FILE", "backbone_list", "check_model_folder", "saved_architecture", "saved_model_type"]
