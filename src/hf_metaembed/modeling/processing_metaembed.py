"""MetaEmbedProcessor: every backbone's tokenizer, and the alignment of each backbone's tokens onto shared units.

Units are residues for protein backbones and whitespace-separated words for text backbones; special tokens (and
chain separators) are never units. Model code (copied next to a saved model for `trust_remote_code`): imports
torch, transformers and its sibling files only.
"""

import json
import os
import re
from collections.abc import Mapping, Sequence

from transformers import AutoTokenizer, BatchEncoding
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import cached_file

from .backbone_families import backbone_family
from .backbones import (
    infer_unit_type,
    load_backbone_config,
    sentence_transformers_prompts,
    sentence_transformers_settings,
)
from .feature_rows import sample_row
from .padding_metaembed import pad_features
from .pairing import PAIRINGS
from .processing_options import (
    CALL_OPTIONS,
    check_options,
    padding_strategy,
)
from .remote_code_backbones import trust_flags
from .safe_files import staged_save
from .segment_encoding import SegmentEncoding
from .segments import as_list, input_segments
from .tokenization_metaembed import (
    PROTEIN_LETTERS,
    BackboneTokenization,
    token_limit,
)

PROCESSOR_CONFIG_NAME = "processor_config.json"
# where AutoTokenizer looks first; it sends AutoTokenizer to `MetaEmbedTokenizers`, which names AutoProcessor
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
_TOKENIZER_FOLDER = re.compile(r"tokenizer_\d+")


class MetaEmbedProcessor(SegmentEncoding):
    """Holds every backbone's tokenizer and turns sequences (or ligand/receptor complexes) into model inputs.

    Call it with `sequences` (or `text=`; architecture `single`) or with `ligand=` and `receptor=` lists of chains
    (pair architectures). By default (`return_tensors="pt"`) it returns a padded batch: `input_ids`,
    `attention_mask` and `token_unit_index` shaped `(segments, backbones, tokens)`, `unit_mask (segments, units)`,
    and for pairs `segment_sample_index` and `segment_side_index (segments,)`. With `return_tensors=None` it returns
    one unpadded row per sample under `forward`'s names (what `datasets.Dataset.map` stores and `pad`, a data
    collator, pads). The tokenizer keywords `padding`, `truncation`, `max_length`, `pad_to_multiple_of` and
    `return_tensors` mean what they mean for a `transformers` tokenizer.

    Protein input is normalised as documented: whitespace removed, letters upper-cased, letters a backbone's
    vocabulary lacks read as X. Text is split into words on whitespace. Anything else is an error naming the sample
    (docs/RELIABILITY.md lists them): a non-string, an empty or whitespace-only string, invalid Unicode, letters that
    are not amino acids (unless `unknown_residues="x"`), or prose given to protein backbones.

    Settings (each also accepted by `from_pretrained` and by every call, which override the stored value):
        architecture: how a sample's segments are laid out (`single`, or a pair architecture).
        truncation: cut inputs longer than a backbone accepts (with a warning) instead of raising.
        unknown_residues: `"error"` (default) or `"x"` (read non-amino-acid letters as X, counted in a warning).
        per_unit_labels: `True`: every sample's labels are one per unit (checked, padded with -100). `False`
            (default): decided from the labels: lists whose lengths differ between samples are per-unit labels (each
            checked against its sample's units), scalars and equal-length lists are stacked.
        long_sequences: `"error"` (default) rejects an input longer than a backbone accepts, naming the sample, the
            backbone and its limit; `"window"` lets it through for a model whose config sets a window policy
            (`window_size`), which reads it in sliding windows.
        prompts: per backbone, its instruction prompts by name or None (`[None, {"query": "Instruct: Given a
            query, retrieve passages\\nQuery: "}]`), as sentence-transformers keeps them (`from_backbones` reads a
            sentence-transformers backbone's own `prompts`). prompt_name: the prompt every call uses unless it
            names another (None: no prompt). A backbone with a prompt of that name reads its tokens before the
            sequence; they belong to no unit (`token_unit_index` -2) and no sequence pooling reads them.

    `max_lengths`: the longest token sequence each backbone accepts (its tokenizer's and position limits; a
    sentence-transformers backbone's own `max_seq_length`). `model_types`: each backbone's `config.model_type`
    (filled by `from_backbones`, saved with the processor); it picks the backbone's family record
    (`BackboneFamily`), which says e.g. which token separates joined chains. None (processors saved by release
    0.1): the generic record, whose separator rule every shipped family shares.
    """

    _auto_class = None

    def __init__(
        self,
        tokenizers: list,
        unit_types: list[str],
        max_lengths: list[int | None] | None = None,
        backbone_names: list[str | None] | None = None,
        architecture: str = "single",
        truncation: bool = False,
        unknown_residues: str = "error",
        per_unit_labels: bool = False,
        long_sequences: str = "error",
        model_types: list[str | None] | None = None,
        prompts: list[dict[str, str] | None] | None = None,
        prompt_name: str | None = None,
    ) -> None:
        check_options(
            architecture=architecture,
            truncation=truncation,
            unknown_residues=unknown_residues,
            per_unit_labels=per_unit_labels,
            long_sequences=long_sequences,
        )
        count = len(tokenizers)
        self.tokenizers = list(tokenizers)
        self.unit_types = list(unit_types)
        self.max_lengths = list(max_lengths or [None] * count)
        self.backbone_names = list(backbone_names or [None] * count)
        self.architecture = architecture
        self.truncation = truncation
        self.unknown_residues = unknown_residues
        self.per_unit_labels = per_unit_labels
        self.long_sequences = long_sequences
        # each backbone's config.model_type picks its family record (chain separator); None: the generic record
        self.model_types = list(model_types or [None] * count)
        self.prompts = list(prompts or [None] * count)
        if len(self.prompts) != count:
            raise ValueError(f"prompts has {len(self.prompts)} entries for {count} backbones; give one per backbone")
        self.prompt_name = prompt_name
        self.backbones = [
            BackboneTokenization(tok, kind, limit, name, backbone_family(model_type), backbone_prompts)
            for tok, kind, limit, name, model_type, backbone_prompts in zip(
                self.tokenizers, self.unit_types, self.max_lengths, self.backbone_names, self.model_types, self.prompts
            )
        ]
        self._encoding_options(None, None, None, None)  # an unknown default prompt_name fails here

    # ---------------------------------------------------------------- construction, saving, loading

    @classmethod
    def from_backbones(
        cls,
        backbones: list[str],
        *,
        revisions: list[str | None] | None = None,
        unit_types: list[str] | None = None,
        backbone_trust_remote_code: bool | list[bool] = False,
        **kwargs,
    ) -> "MetaEmbedProcessor":
        """Load each backbone's tokenizer (and config, for its length limit) from a Hub id or local folder.

        A backbone that is a sentence-transformers model reads at most its own `max_seq_length`
        (`sentence_bert_config.json`), as `SentenceTransformer.encode` does, and brings its own `prompts` (and
        `default_prompt_name`, when the backbones agree on one) unless `prompts=` is given.
        `backbone_trust_remote_code` (one flag, or one per backbone): as in `MetaEmbedModel.from_backbones`, for
        backbones that ship their own code; without it such a backbone is refused at once.
        """
        revisions = list(revisions or [None] * len(backbones))
        tokenizers, kinds, limits, model_types, prompts, default_prompts = [], [], [], [], [], set()
        trusted = trust_flags(backbone_trust_remote_code, len(backbones))
        for index, (name, revision) in enumerate(zip(backbones, revisions)):
            config = load_backbone_config(str(name), revision, index, trusted[index])
            trust = {"trust_remote_code": trusted[index]}  # always told, so transformers never asks "[y/N]"
            tokenizer = AutoTokenizer.from_pretrained(str(name), revision=revision, **trust)
            if getattr(tokenizer, "add_prefix_space", None) is False:
                # byte-level BPE (RoBERTa, GPT-2) only tokenizes pre-split words with a prefix space
                tokenizer = AutoTokenizer.from_pretrained(str(name), revision=revision, add_prefix_space=True, **trust)
            tokenizers.append(tokenizer)
            kinds.append(unit_types[index] if unit_types else infer_unit_type(tokenizer, config))
            limit = token_limit(tokenizer, config)
            # a sentence-transformers model reads at most its own max_seq_length (e.g. 256 for all-MiniLM-L6-v2)
            sentence = sentence_transformers_settings(str(name), revision, warn=False)
            if sentence and sentence["max_seq_length"]:
                limit = min(limit or sentence["max_seq_length"], sentence["max_seq_length"])
            limits.append(limit)
            model_types.append(config.model_type)
            own_prompts, default_prompt = sentence_transformers_prompts(str(name), revision)
            prompts.append(own_prompts)
            if default_prompt:
                default_prompts.add(default_prompt)
        if "prompts" not in kwargs and any(prompts):  # sentence-transformers backbones' own prompts
            kwargs["prompts"] = prompts
            if len(default_prompts) == 1:
                kwargs.setdefault("prompt_name", default_prompts.pop())
        return cls(tokenizers, kinds, limits, [str(b) for b in backbones], model_types=model_types, **kwargs)

    def to_dict(self) -> dict:
        return {
            "processor_class": type(self).__name__,
            "unit_types": self.unit_types,
            "max_lengths": self.max_lengths,
            "backbone_names": self.backbone_names,
            "architecture": self.architecture,
            "truncation": self.truncation,
            "unknown_residues": self.unknown_residues,
            "per_unit_labels": self.per_unit_labels,
            "long_sequences": self.long_sequences,
            "model_types": self.model_types,
            "prompts": self.prompts,
            "prompt_name": self.prompt_name,
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        """Write every tokenizer to `tokenizer_<i>/` and the settings to `processor_config.json`.

        Crash-safe: the files are written to a staging folder and moved in when complete (docs/RELIABILITY.md).
        """
        with staged_save(save_directory, last=(PROCESSOR_CONFIG_NAME,), owned_folders=_TOKENIZER_FOLDER) as staging:
            for index, tokenizer in enumerate(self.tokenizers):
                tokenizer.save_pretrained(os.path.join(staging, f"tokenizer_{index}"))
            settings = self.to_dict()
            if self._auto_class is not None:
                custom_object_save(self, staging)
                module = type(self).__module__.split(".")[-1]
                settings["auto_map"] = {"AutoProcessor": f"{module}.{type(self).__name__}"}
                # AutoTokenizer reads the folder's root: point it at the class that names AutoProcessor
                tokenizers = {"AutoTokenizer": [f"{module}.{MetaEmbedTokenizers.__name__}", None]}
                with open(os.path.join(staging, TOKENIZER_CONFIG_NAME), "w", encoding="utf-8") as handle:
                    json.dump({"auto_map": tokenizers}, handle, indent=2)
            with open(os.path.join(staging, PROCESSOR_CONFIG_NAME), "w", encoding="utf-8") as handle:
                json.dump(settings, handle, indent=2, sort_keys=True)
        return [os.path.join(save_directory, PROCESSOR_CONFIG_NAME)]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "MetaEmbedProcessor":
        """Load a processor saved with `save_pretrained` (a local folder or a Hub repo).

        Keyword arguments: the Hub ones (`revision`, `token`, `cache_dir`, `local_files_only`) and any setting in
        `CALL_OPTIONS` (`unknown_residues="x"`, `per_unit_labels=True`, `long_sequences="window"`, `truncation`,
        `architecture`), which overrides the saved value.
        """
        hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
        overrides = {k: kwargs.pop(k) for k in CALL_OPTIONS if k in kwargs}
        # passed along by AutoProcessor; they change nothing for a processor whose code is already loaded
        for key in ("trust_remote_code", "code_revision", "_from_auto", "_commit_hash", "use_fast"):
            kwargs.pop(key, None)
        if kwargs:
            raise TypeError(
                f"MetaEmbedProcessor.from_pretrained got unknown argument(s) {sorted(kwargs)}; it takes the Hub "
                f"arguments revision, token, cache_dir, local_files_only and the settings {', '.join(CALL_OPTIONS)}"
            )
        path = cached_file(pretrained_model_name_or_path, PROCESSOR_CONFIG_NAME, **hub_kwargs)
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)
        settings.pop("auto_map", None)
        settings.pop("processor_class", None)
        settings.update(overrides)
        tokenizers = [
            AutoTokenizer.from_pretrained(pretrained_model_name_or_path, subfolder=f"tokenizer_{i}", **hub_kwargs)
            for i in range(len(settings["unit_types"]))
        ]
        return cls(tokenizers, **settings)

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Save the processor code with the processor so `AutoProcessor(trust_remote_code=True)` finds it."""
        cls._auto_class = auto_class

    # ---------------------------------------------------------------- checking and normalising input

    @property
    def is_protein(self) -> bool:
        return "residue" in self.unit_types

    def __call__(
        self,
        sequences: str | list[str] | None = None,
        *,
        text: str | list[str] | None = None,
        ligand: list[list[str]] | None = None,
        receptor: list[list[str]] | None = None,
        labels: Sequence | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str | None = None,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        architecture: str | None = None,
        unknown_residues: str | None = None,
        long_sequences: str | None = None,
        per_unit_labels: bool | None = None,
        prompt_name: str | None = None,
    ) -> BatchEncoding:
        """Encode a batch.

        Args:
            sequences (or `text`): protein sequences or texts (architecture `single`).
            ligand, receptor: per complex, the list of chains of each side (pair architectures).
            labels: one label per sample (a number, a list of numbers, or per-unit labels), returned as `labels`.
            return_tensors: `"pt"` (default) for torch tensors, `"np"` for numpy arrays, None for Python lists.
            padding: `True`/`"longest"` pads to the longest sample, `"max_length"` to `max_length` (default: the
                longest a backbone accepts), `False`/`"do_not_pad"` not at all. Defaults to `True` with tensors and
                `False` with `return_tensors=None`, which then gives one unpadded row per sample (see `pad`).
            truncation: `True` (or `"longest_first"`) cuts inputs longer than a backbone accepts, or than
                `max_length`, with a warning; `False` raises instead. Defaults to the processor's setting.
            max_length: the most tokens any backbone reads in this call (capped by each backbone's own limit).
            pad_to_multiple_of: round the padded token and unit lengths up to a multiple of this.
            architecture, unknown_residues, long_sequences, per_unit_labels, prompt_name: override the processor's
                settings for this call.

        Returns:
            A `BatchEncoding`: padded `input_ids`, `attention_mask`, `token_unit_index` `(segments, backbones,
            tokens)`, `unit_mask (segments, units)` (pairs: `segment_sample_index`, `segment_side_index`); or,
            unpadded, one row per sample of `input_ids`/`token_unit_index` (segments x backbones x tokens),
            `unit_mask` (segments x units) and `segment_side_index` (segments,), all nested lists. Plus `labels`
            when given.
        """
        if text is not None:
            if sequences is not None:
                raise ValueError("pass the sequences once: as the first argument or as text=, not both")
            sequences = text
        check_options(architecture=architecture, per_unit_labels=per_unit_labels)
        padding = padding_strategy(padding, return_tensors)
        architecture = architecture or self.architecture
        options = self._encoding_options(truncation, unknown_residues, long_sequences, max_length, prompt_name)
        samples = input_segments(sequences, ligand, receptor, architecture, PAIRINGS.get_class(architecture))
        if not samples:
            raise ValueError("the batch is empty: pass at least one sequence")
        if labels is not None:
            labels = as_list(labels, "labels")
            if len(labels) != len(samples):
                raise ValueError(
                    f"got {len(labels)} labels for {len(samples)} samples; give exactly one label per sample"
                )
        stats: dict[str, int] = {}
        rows = []
        for index, segments in enumerate(samples):
            encoded_segments = []
            for side, chains in segments:
                where = self.segment_label(architecture, side)
                segment = self._encode_chains(chains, index, where, stats, options)
                segment["segment_side"] = side
                encoded_segments.append(segment)
            rows.append(sample_row(encoded_segments, None if labels is None else labels[index]))
        self.warn_about(stats, stacklevel=3)
        if not padding and return_tensors is None:  # one unpadded row per sample, as columns
            return BatchEncoding({key: [row[key] for row in rows] for key in rows[0]})
        return self.pad(
            rows,
            padding=padding,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            return_tensors=return_tensors,
            architecture=architecture,
            per_unit_labels=per_unit_labels,
        )

    def pad(
        self,
        features: Sequence[Mapping] | Mapping,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = "pt",
        architecture: str | None = None,
        per_unit_labels: bool | None = None,
    ) -> BatchEncoding:
        """Pad per-sample features into a batch, as a tokenizer's `pad`: usable as a `Trainer` data collator, and
        what `transformers.DataCollatorWithPadding(processor)` calls.

        Args:
            features: one mapping per sample (or a mapping of columns, one entry per sample), in any of the forms
                this processor writes: the unpadded rows of `__call__(..., return_tensors=None)` (also as stored by
                `datasets`, and as `Trainer` keeps them), rows of a padded batch (architecture `single`: the
                padding, read off `attention_mask` and `unit_mask`, is dropped first), or release 0.1's
                `{"segments": [...]}` form. Labels may be named `labels`, `label` or `label_ids`; other keys are
                ignored.
            padding, max_length, pad_to_multiple_of, return_tensors: as in `__call__`.
            architecture, per_unit_labels: override the processor's settings.

        Returns:
            A `BatchEncoding` of `input_ids`, `attention_mask`, `token_unit_index` `(segments, backbones, tokens)`,
            `unit_mask (segments, units)`, for pair architectures `segment_sample_index` and `segment_side_index`
            `(segments,)`, and `labels` (per-unit labels padded with -100) when every sample has one.
        """
        return pad_features(
            self, features, padding, max_length, pad_to_multiple_of, return_tensors, architecture, per_unit_labels
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"


class MetaEmbedTokenizers:
    """What `AutoTokenizer` finds in a MetaEmbed folder, which holds one tokenizer per backbone (`tokenizer_0/`,
    `tokenizer_1/`, ...) rather than one: loading it raises an error that names `AutoProcessor`, which loads them
    all (and the alignment of their tokens onto units)."""

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoTokenizer") -> None:
        """Nothing to register (AutoTokenizer calls this on classes it loads as remote code)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs):
        folder = str(pretrained_model_name_or_path)
        raise ValueError(
            f"{folder} holds a MetaEmbed model, which reads its input with one tokenizer per backbone (tokenizer_0/, "
            f"tokenizer_1/, ...) rather than one: load them together with AutoProcessor.from_pretrained({folder!r}, "
            f"trust_remote_code=True) (one backbone's own tokenizer: AutoTokenizer.from_pretrained({folder!r}, "
            f"subfolder='tokenizer_0')); for a pipeline, pipeline('feature-extraction', model={folder!r}, "
            "trust_remote_code=True)"
        )


MetaEmbedProcessor.register_for_auto_class()

__all__ = ["MetaEmbedProcessor", "MetaEmbedTokenizers", "PROTEIN_LETTERS"]
