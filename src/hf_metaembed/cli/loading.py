"""What the commands load, and how they feed it: saved MetaEmbed folders (model and processor), devices, and
records encoded batch by batch with errors that name the record. One home for every command (`embed`, `train`,
`evaluate`, `cache`)."""

import argparse
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ..batching import DEFAULT_MAX_TOKENS
from ..io.records import InputError, PairRecord, Record
from ..modeling.configuration_metaembed import MetaEmbedConfig
from ..modeling.modeling_metaembed import MetaEmbedModel, MetaEmbedPreTrainedModel
from ..modeling.processing_metaembed import MetaEmbedProcessor
from .errors import UsageError, one_line

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
        raise UsageError(f"model folder {str(folder)!r} does not exist; pass a folder written by save_pretrained")
    if not (path / "config.json").is_file():
        raise UsageError(f"{str(folder)!r} has no config.json; pass a folder written by model.save_pretrained")
    model_type = saved_model_type(path)
    if model_type != "metaembed":
        raise UsageError(
            f"{str(folder)!r} holds a {model_type!r} model, not a MetaEmbed model; build one with "
            "`hf-metaembed train --backbones ...` or MetaEmbedModel.from_backbones(...).save_pretrained(folder)"
        )
    if require_processor and not (path / PROCESSOR_FILE).is_file():
        raise UsageError(f"{str(folder)!r} has no {PROCESSOR_FILE}; save it with processor.save_pretrained(folder)")
    return path


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
    where = f"record {record.index} (id {record.id!r})"
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


def add_max_tokens_argument(parser: argparse.ArgumentParser, inputs: str) -> None:
    """`--max-tokens` (embed and cache build): the token budget `inputs` (records, segments) are batched within."""
    parser.add_argument(
        "--max-tokens",
        type=max_tokens_argument,
        default=DEFAULT_MAX_TOKENS,
        help=f"padded tokens per backbone pass, one number or one per backbone (a,b); {inputs} run longest first in "
        f"batches within this budget, which bounds peak memory (default: {DEFAULT_MAX_TOKENS})",
    )


def max_tokens_argument(text: str) -> int | list[int]:
    """`--max-tokens`: one positive number (every backbone), or one per backbone joined by commas."""
    try:
        budgets = [int(part) for part in text.split(",")]
    except ValueError:
        budgets = []
    if not budgets or any(budget < 1 for budget in budgets):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a token budget: give one positive number, or one per backbone (e.g. 4096,2048)"
        )
    return budgets[0] if len(budgets) == 1 else budgets


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
    "batches",
    "check_model_folder",
    "encode",
    "load_processor",
    "load_saved_model",
    "processor_for",
    "progress",
    "saved_architecture",
    "saved_model_type",
    "torch_device",
]
