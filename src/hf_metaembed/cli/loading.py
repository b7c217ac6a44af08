"""What the commands load, and how they feed it: saved MetaEmbed folders (model and processor), devices, and
records encoded batch by batch with errors that name the record. One home for every command (`embed`, `train`,
`evaluate`, `cache`)."""

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ..io.records import InputError, PairRecord, Record
from ..modeling.configuration_metaembed import MetaEmbedConfig
from ..modeling.modeling_metaembed import MetaEmbedModel, MetaEmbedPreTrainedModel
from ..modeling.processing_metaembed import MetaEmbedProcessor
from .errors import UsageError, one_line
from .folders import PROCESSOR_FILE, backbone_list, check_model_folder, saved_architecture, saved_model_type
from .options import NEW_MODEL_SETTINGS, add_max_tokens_argument, check_block_names, max_tokens_argument


def processor_for(config: MetaEmbedConfig) -> MetaEmbedProcessor:
    """A fresh `MetaEmbedProcessor` for the backbones (names and revisions) of a MetaEmbed `config`."""
    return MetaEmbedProcessor.from_backbones(config.backbone_names, revisions=config.backbone_revisions)


def load_processor(folder: Path, config: MetaEmbedConfig | None = None) -> MetaEmbedProcessor:
    """The processor saved in `folder`; without one, a fresh one for the backbones of `config` (when given)."""
    if (folder / PROCESSOR_FILE).is_file() or config is None:
        return MetaEmbedProcessor.from_pretrained(str(folder))
    return processor_for(config)


def load_saved_model(
    folder: str | os.PathLike,
    model_class: type[MetaEmbedPreTrainedModel] = MetaEmbedModel,
    require_processor: bool = True,
    **kwargs,
) -> tuple[MetaEmbedPreTrainedModel, MetaEmbedProcessor]:
    """`(model, processor)` of a saved MetaEmbed folder, checked first (`check_model_folder`).

    Args:
        folder: the folder written by `save_pretrained`.
        model_class: the class to load (default `MetaEmbedModel`), e.g. `MetaEmbedForSequenceClassification`.
        require_processor: refuse a folder without a saved processor; otherwise build one for the model's backbones.
        kwargs: passed to `from_pretrained`.
    """
    path = check_model_folder(folder, require_processor)
    model = model_class.from_pretrained(str(path), **kwargs)
    return model, load_processor(path, model.config)


def model_settings(args) -> dict:
    """The MetaEmbedConfig settings given on the command line for a new model (only those given, so the config's
    defaults and the preset decide the rest), block names checked against the registries; `--window-size` and
    `--window-overlap` also apply to a saved model. Settings of a new model given with a saved `--model` are a usage
    error naming them."""
    check_block_names(args)
    settings = {name: getattr(args, name) for name in NEW_MODEL_SETTINGS if getattr(args, name, None) is not None}
    if getattr(args, "model", None) and settings:
        flags = ", ".join("--" + name.replace("_", "-") for name in settings)
        raise UsageError(
            f"{flags} set up a new model from --backbones; the saved model {args.model!r} keeps its own settings: "
            f"drop {flags}"
        )
    if getattr(args, "loss", None) is not None:
        settings["loss"] = args.loss
    settings.update(window_settings(args))
    return settings


def window_settings(args) -> dict:
    """`window_size` / `window_overlap` from `--window-size` / `--window-overlap`, checked against
    `--long-sequences` (a window policy is what `--long-sequences window` reads long inputs with)."""
    settings = {}
    if getattr(args, "window_size", None) is not None:
        settings["window_size"] = args.window_size
    if getattr(args, "window_overlap", None) is not None:
        if "window_size" not in settings:
            raise UsageError("--window-overlap needs --window-size N (the window it overlaps)")
        settings["window_overlap"] = args.window_overlap
    return settings


def processor_options(args) -> dict:
    """The processor call options given on the command line (`--unknown-residues`, `--long-sequences`,
    `--truncation`), for every processor call of a command."""
    options = {}
    for name in ("unknown_residues", "long_sequences"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    if getattr(args, "truncation", False):
        options["truncation"] = True
    return options


def check_window_policy(model_config, args) -> None:
    """`--long-sequences window` needs a model that reads long inputs in windows: one saved with a window size, or
    `--window-size`."""
    if getattr(args, "long_sequences", None) != "window" or getattr(args, "truncation", False):
        return
    if getattr(model_config, "window_size", None) is None:
        raise UsageError(
            "--long-sequences window reads long inputs in sliding windows, but the model has no window size: add "
            "--window-size N (units per window, e.g. 1022 for ESM-2)"
        )


def build_from_backbones(args, model_class: type[MetaEmbedPreTrainedModel] = MetaEmbedModel, **config_kwargs):
    """`(model, processor)` built from `--backbones` with the command line's settings, initialised with `--seed`:
    an untrained model (fusion and head), its processor laid out for the model's architecture."""
    from transformers import set_seed

    backbones = backbone_list(args.backbones)
    settings = model_settings(args)
    set_seed(getattr(args, "seed", 42))
    try:
        model = model_class.from_backbones(backbones, **settings, **config_kwargs)
        processor = MetaEmbedProcessor.from_backbones(
            backbones, architecture=model.config.architecture, **trust_setting(settings)
        )
    except (OSError, ValueError) as error:
        raise UsageError(one_line(error)) from None
    check_window_policy(model.config, args)
    return model, processor


def trust_setting(settings: dict) -> dict:
    """`backbone_trust_remote_code` of a new model's settings (`--backbone-trust-remote-code`), for its processor."""
    return {"backbone_trust_remote_code": bool(settings.get("backbone_trust_remote_code"))}


def torch_device(name: str) -> torch.device:
    """The torch device named by `--device` (`auto`: cuda when available, else cpu), checked to exist here: a device
    this torch cannot use is a `UsageError` naming the fix, not an error from deep inside torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                reason = f"this torch ({torch.__version__}) is a CPU-only build"
                fix = "use --device cpu, or install a CUDA build of torch (https://pytorch.org/get-started/locally/)"
            else:
                reason = "torch sees no CUDA GPU (no driver, or CUDA_VISIBLE_DEVICES hides them)"
                fix = "use --device cpu, or run where a GPU is visible"
            raise UsageError(f"--device {name}: {reason}; {fix}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: Apple's MPS backend is not available here; use --device cpu")
    return device


_SAMPLE_PREFIX = re.compile(r"^sample 0(?: \(([a-z ]+)\))?: ")


def _record_error(record: Record | PairRecord, error: Exception, side_columns: dict[str, str] | None) -> InputError:
    """The processor's error about the one sample `record`, reworded to name the record (and, for a complex, the
    column of the side at fault)."""
    message = one_line(error)
    match = _SAMPLE_PREFIX.match(message)
    where = record.where()
    if match:
        message = message[match.end() :]
        side = match.group(1)
        if side in ("ligand", "receptor"):
            column = (side_columns or {}).get(side)
            where += f", {side}" + (f" column {column!r}" if column else "")
        elif side:
            where += f" ({side})"
    return InputError(f"{where}: {message}")


def encode(
    processor: MetaEmbedProcessor,
    records: list[Record] | list[PairRecord],
    side_columns: dict[str, str] | None = None,
    **kwargs,
):
    """Encode a batch of `Record`s (sequences) or `PairRecord`s (complexes); on bad input, name the record (file
    position and id) and, for a complex, the side and its column (`side_columns`: `{"ligand": name, ...}`), not the
    batch position."""

    def call(batch):
        if isinstance(batch[0], PairRecord):
            return processor(ligand=[r.ligand for r in batch], receptor=[r.receptor for r in batch], **kwargs)
        return processor([record.text for record in batch], **kwargs)

    try:
        return call(records)
    except (ValueError, TypeError) as batch_error:
        for record in records:
            try:
                call([record])
            except (ValueError, TypeError) as error:
                raise _record_error(record, error, side_columns) from error
        raise batch_error


def batches(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last one shorter), read lazily from `items`."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def progress(total: int | None, description: str, disable: bool, initial: int = 0):
    """A tqdm bar counting sequences (hidden with `--no-progress`)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="seq", disable=True if disable else None)


__all__ = [
    "PROCESSOR_FILE",
    "add_max_tokens_argument",
    "batches",
    "build_from_backbones",
    "check_window_policy",
    "check_model_folder",
    "encode",
    "load_processor",
    "load_saved_model",
    "max_tokens_argument",
    "model_settings",
    "processor_options",
    "processor_for",
    "progress",
    "saved_architecture",
    "saved_model_type",
    "torch_device",
    "trust_setting",
    "window_settings",
]
