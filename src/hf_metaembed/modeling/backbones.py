"""Backbones: building them from stored configs, loading them once from a name, their unit type, and the
sentence-transformers settings stored beside them (how reading them happens is reading.py's).

What differs between backbone families (loading class, unit type, LoRA targets, ...) is one `BackboneFamily` record in
`backbone_families`; this module reads it.

Model code (copied next to a saved model for `trust_remote_code`): imports torch and transformers only.
"""

import inspect
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel

from .backbone_families import backbone_family
from .layer_menu import ScalarMix as _ScalarMix
from .layer_menu import select_layer as _select_layer
from .reading import SENTENCE_POOLING_MODES
from .reading import align_to_units as _align_to_units
from .reading import pool_sentence as _pool_sentence
from .remote_code_backbones import build_remote_backbone, check_trusted, runs_own_code
from .safe_files import find_file


def backbone_class(config: PreTrainedConfig) -> type[PreTrainedModel]:
    """The encoder class used for a backbone config, as its family record says (`T5EncoderModel` for T5-family,
    `AutoModel`'s choice for a model type without a record)."""
    return backbone_family(config.model_type).model_class_for(config)


def _pooler_free_kwargs(model_class: type[PreTrainedModel]) -> dict:
    # the pooler of BERT/ESM-style models is never used for fusion; skipping it avoids random weights and compute
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


def build_backbone(config: PreTrainedConfig) -> PreTrainedModel:
    """An empty backbone from its config (weights come from the checkpoint; never calls `from_pretrained`)."""
    model_class = backbone_class(config)
    return model_class(config, **_pooler_free_kwargs(model_class))


def build_stored_backbone(config, index: int) -> PreTrainedModel:
    """Backbone `index` of a `MetaEmbedConfig`, empty: from its family's class, or, for a backbone with its own code,
    from the code files saved beside the model `config.name_or_path` names (remote_code_backbones.py)."""
    record = config.backbones[index]
    if runs_own_code(record):
        return build_remote_backbone(record, index, config.name_or_path or None)
    return build_backbone(config.get_backbone_config(index))


class BackboneNotFoundError(OSError):
    """A backbone name or path that cannot be found locally or reached on the Hub."""


def looks_local(name: str) -> bool:
    """A Hub id is "name" or "owner/name"; anything else (or an existing folder) is a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.path.isdir(os.path.expanduser(name))


def load_backbone_config(
    name: str,
    revision: str | None = None,
    index: int = 0,
    trust_remote_code: bool = False,
    code_revision: str | None = None,
    **kwargs,
) -> PreTrainedConfig:
    """Load one backbone's config, turning "not found" into an error that names the backbone and the fix.

    A backbone with its own code (`auto_map` in its config) is refused at once unless `trust_remote_code` (the
    backbone's own flag, `backbone_trust_remote_code`); transformers is always told, so it never asks "[y/N]"."""
    # a missing folder needs no network check
    if looks_local(name) and not os.path.isdir(os.path.expanduser(name)):
        raise BackboneNotFoundError(f"backbone {index} {name!r}: no such folder; pass an existing local folder")
    own_code = check_trusted(name, revision, index, trust_remote_code)
    if own_code:
        kwargs["code_revision"] = code_revision
    try:
        return AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=own_code, **kwargs)
    except (OSError, ValueError) as error:
        if os.path.isdir(os.path.expanduser(name)):
            raise BackboneNotFoundError(
                f"backbone {index} {name!r}: the folder holds no loadable model config ({error}); pass a folder "
                "written by save_pretrained"
            ) from error
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            "the Hub cannot be reached offline (HF_HUB_OFFLINE=1): download it once, or pass a local folder"
            if offline
            else "check the name and revision, or pass a local folder"
        )
        raise BackboneNotFoundError(f"backbone {index} {name!r} could not be loaded: {hint} ({error})") from error


# checkpoint keys a backbone encoder never builds: the pooler of BERT-style models (skipped, see `_pooler_free_kwargs`)
# and the pretraining heads of masked-language-model checkpoints (ESM-2's and BERT's); transformers would list them
# in a load report on every load
UNUSED_CHECKPOINT_KEYS = (r"(^|\.)pooler\.", r"(^|\.)lm_head\.", r"(^|\.)cls\.(predictions|seq_relationship)\.")


@contextmanager
def _quiet_unused_keys(model_class: type[PreTrainedModel]) -> Iterator[None]:
    """While loading, count `UNUSED_CHECKPOINT_KEYS` as expected (`_keys_to_ignore_on_load_unexpected`, read when the
    model is built): any other unexpected or missing key is still reported."""
    had_own = "_keys_to_ignore_on_load_unexpected" in model_class.__dict__
    before = model_class.__dict__.get("_keys_to_ignore_on_load_unexpected")
    inherited = getattr(model_class, "_keys_to_ignore_on_load_unexpected", None) or []
    model_class._keys_to_ignore_on_load_unexpected = [*inherited, *UNUSED_CHECKPOINT_KEYS]
    try:
        yield
    finally:
        if had_own:
            model_class._keys_to_ignore_on_load_unexpected = before
        else:
            del model_class._keys_to_ignore_on_load_unexpected


def load_backbone(name: str, revision: str | None = None, index: int = 0, **kwargs) -> PreTrainedModel:
    """Load one backbone with its own class's `from_pretrained` (weights read once).

    Checkpoint keys every encoder leaves unused (`UNUSED_CHECKPOINT_KEYS`: poolers, pretraining heads) are not
    reported; missing weights or other unexpected keys are, as transformers reports them.
    """
    trust_remote_code = kwargs.pop("trust_remote_code", False)
    code_revision = kwargs.pop("code_revision", None)
    config = load_backbone_config(name, revision, index, trust_remote_code, code_revision)
    if getattr(config, "auto_map", None) and trust_remote_code:  # its own code, trusted for this backbone only
        return AutoModel.from_pretrained(
            name, revision=revision, config=config, trust_remote_code=True, code_revision=code_revision, **kwargs
        )
    model_class = backbone_class(config)
    with _quiet_unused_keys(model_class):
        return model_class.from_pretrained(
            name, revision=revision, config=config, **_pooler_free_kwargs(model_class), **kwargs
        )


# ------------------------------------------------------------------------------------ sentence-transformers backbones

_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _json_file(name: str, filename: str, revision: str | None) -> dict | list | None:
    """A JSON file of a model folder or Hub repo, None if it has none (nothing is downloaded but that file)."""
    path = find_file(
        os.path.expanduser(name), filename, revision=revision, _raise_exceptions_for_connection_errors=False
    )
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def sentence_transformers_settings(name: str | None, revision: str | None = None, warn: bool = True) -> dict | None:
    """How a sentence-transformers model makes its sentence vectors, read from its own files; None for a backbone that
    is not one (no `modules.json`).

    Returns:
        `{"pooling": mode or None, "normalize": bool, "max_seq_length": int or None}`: the mode of its `Pooling`
        module (one of `SENTENCE_POOLING_MODES`; None, with a warning, when it concatenates several modes or uses one
        this library does not reproduce), whether a `Normalize` module follows, and its `sentence_bert_config.json`
        `max_seq_length`. Modules after pooling other than `Normalize` (e.g. `Dense`) are not reproduced; a warning
        names them (unless `warn=False`).
    """
    if name is None:
        return None
    modules = _json_file(str(name), "modules.json", revision)
    if not isinstance(modules, list):
        return None
    settings = {"pooling": None, "normalize": False, "max_seq_length": None}
    skipped = []
    for module in modules:
        kind, path = str(module.get("type", "")).rsplit(".", 1)[-1], module.get("path", "")
        if kind == "Transformer":
            transformer = _json_file(str(name), os.path.join(path, "sentence_bert_config.json"), revision) or {}
            settings["max_seq_length"] = transformer.get("max_seq_length")
        elif kind == "Pooling":
            settings["pooling"] = _pooling_mode(_json_file(str(name), os.path.join(path, "config.json"), revision))
            if settings["pooling"] is None:
                skipped.append(f"{kind} ({path})")
        elif kind == "Normalize":
            settings["normalize"] = True
        else:
            skipped.append(f"{kind} ({path or 'root'})")
    if skipped and warn:
        warnings.warn(
            f"{name} is a sentence-transformers model whose modules {skipped} this library does not reproduce: its "
            "sentence vectors will differ from SentenceTransformer.encode (read: the pooling modes "
            f"{', '.join(SENTENCE_POOLING_MODES)}, Normalize and max_seq_length)",
            stacklevel=2,
        )
    return settings


def _pooling_mode(config: dict | None) -> str | None:
    """The one pooling mode of a sentence-transformers `Pooling` config (new `pooling_mode` or legacy booleans)."""
    config = config or {}
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key)]
        mode = modes[0] if len(modes) == 1 else modes
    if isinstance(mode, list | tuple):
        mode = mode[0] if len(mode) == 1 else None
    return mode if mode in SENTENCE_POOLING_MODES else None


def sentence_transformers_prompts(name: str | None, revision: str | None = None) -> tuple[dict | None, str | None]:
    """A sentence-transformers backbone's own instruction prompts and default prompt name
    (`config_sentence_transformers.json`: `prompts`, `default_prompt_name`); `(None, None)` when it has none."""
    if name is None:
        return None, None
    settings = _json_file(str(name), "config_sentence_transformers.json", revision)
    if not isinstance(settings, dict) or not settings.get("prompts"):
        return None, None
    return dict(settings["prompts"]), settings.get("default_prompt_name")


def sentence_pooling(name: str | None, revision: str | None = None) -> dict | None:
    """A backbone record's `sentence_pooling` (`{"mode", "normalize"}`) for a sentence-transformers backbone whose
    pooling this library reproduces, else None."""
    settings = sentence_transformers_settings(name, revision)
    if settings is None or settings["pooling"] is None:
        return None
    return {"mode": settings["pooling"], "normalize": settings["normalize"]}


def sentence_transformers_defaults(poolings: list[dict | None], settings: dict) -> dict:
    """The settings a model over only sentence-transformers backbones takes where the user gave none (`poolings`:
    each backbone's `sentence_pooling`): `level="sequence"`, so each backbone makes its sentence vector as its own
    config says, and for one backbone alone `fusion="concat"`, so that vector passes through unchanged and the model
    equals `SentenceTransformer(folder).encode`. Backbones of several kinds keep the defaults (README)."""
    chosen = {"level", "pooling", "pool_special_tokens", "architecture"} & set(settings)
    if not poolings or not all(poolings) or chosen:
        return {}
    return {"level": "sequence", **({"fusion": "concat"} if len(poolings) == 1 and "fusion" not in settings else {})}


def infer_unit_type(tokenizer=None, config: PreTrainedConfig | None = None) -> str:
    """Whether a backbone reads proteins (`"residue"`) or text (`"word"`): its family's unit type when the record
    states one (ESM-2, static word vectors), else guessed from the tokenizer.

    A protein tokenizer's ordinary tokens are single letters (possibly with a word-start marker), so a vocabulary
    with no multi-letter ordinary token is a residue vocabulary.
    """
    known = backbone_family(config.model_type if config is not None else None).unit_type
    if known is not None:
        return known
    if tokenizer is None:
        return "word"
    special = set(tokenizer.all_special_tokens)
    for token in tokenizer.get_vocab():
        if token in special or token.startswith(("<", "[")):
            continue
        letters = token.replace("\u2581", "").replace("\u0120", "").replace("##", "")
        if len(letters) > 1:
            return "word"
    return "residue"


# names that moved to the reading stage in release 0.2, importable from here for one release
_MOVED_TO_READING = {
    "ScalarMix": _ScalarMix,
    "align_to_units": _align_to_units,
    "pool_sentence": _pool_sentence,
    "select_layer": _select_layer,
}


def __getattr__(name: str):
    if name in _MOVED_TO_READING:
        warnings.warn(
            f"hf_metaembed.modeling.backbones.{name} moved in hf_metaembed 0.2: import it from "
            "hf_metaembed.modeling.reading",
            DeprecationWarning,
            stacklevel=2,
        )
        return _MOVED_TO_READING[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
