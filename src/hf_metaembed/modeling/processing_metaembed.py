"""MetaEmbedProcessor: every backbone's tokenizer, and the alignment of each backbone's tokens onto shared units.

Units are residues for protein backbones and whitespace-separated words for text backbones; special tokens (and
chain separators) are never units. Model code (copied next to a saved model for `trust_remote_code`): imports
torch, transformers and its sibling files only.
"""

import json
import math
import os
import re
import warnings
from collections.abc import Sequence

import torch
from transformers import AutoTokenizer, BatchEncoding
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import cached_file

from .backbones import GENERIC_FAMILY, BackboneFamily, backbone_family, infer_unit_type, load_backbone_config
from .pairing import PAIRINGS, layout_segments
from .safe_files import staged_save

PROCESSOR_CONFIG_NAME = "processor_config.json"
STANDARD_RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
# accepted amino-acid letters beyond the 20: unknown (X), selenocysteine (U), pyrrolysine (O), ambiguous B and Z
EXTRA_RESIDUES = "XUOBZ"
PROTEIN_LETTERS = frozenset(STANDARD_RESIDUES + EXTRA_RESIDUES)
# "window": inputs longer than a backbone accepts pass through, for a model with a window policy to read in windows
LONG_SEQUENCE_POLICIES = ("error", "window")
_UNBOUNDED = 10**8
_TOKENIZER_FOLDER = re.compile(r"tokenizer_\d+")


def _special_token_frame(tokenizer, probe: str) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a sequence (e.g. [CLS] ... [SEP], <cls> ... <eos>)."""
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    without = tokenizer(probe, add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(without) + 1):
        if with_special[start : start + len(without)] == without:
            return with_special[:start], with_special[start + len(without) :]
    return [], []


class BackboneTokenization:
    """How one backbone turns a segment (a list of chains) into token ids and a token -> unit map."""

    def __init__(
        self,
        tokenizer,
        unit_type: str,
        max_length: int | None,
        name: str,
        family: BackboneFamily = GENERIC_FAMILY,
    ) -> None:
        self.tokenizer = tokenizer
        self.unit_type = unit_type
        self.max_length = max_length
        self.name = name
        self.prefix, self.suffix = _special_token_frame(tokenizer, "A" if unit_type == "residue" else "a")
        self.separator = family.separator_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if unit_type == "residue":
            self.residue_ids = {letter: self._residue_ids(letter) for letter in PROTEIN_LETTERS}
            # letters this vocabulary lacks are read as X (ProtT5 has no U, Z, O, B)
            for letter, ids in self.residue_ids.items():
                if ids is None:
                    self.residue_ids[letter] = self.residue_ids["X"] or [tokenizer.unk_token_id]

    def _residue_ids(self, letter: str) -> list[int] | None:
        unk = self.tokenizer.unk_token_id
        for token in (letter, "\u2581" + letter):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != unk:
                return [token_id]
        ids = self.tokenizer(letter, add_special_tokens=False)["input_ids"]
        return ids if ids and unk not in ids else None

    def encode(self, chains: Sequence) -> tuple[list[int], list[int]]:
        """Token ids and the unit of each token (-1 for special tokens) for one segment of chains.

        `chains` holds residue strings (protein) or word lists (text); units are numbered across chains.
        """
        ids, units = list(self.prefix), [-1] * len(self.prefix)
        offset = 0
        for position, chain in enumerate(chains):
            if position:
                ids += self.separator
                units += [-1] * len(self.separator)
            chain_ids, chain_units = self._encode_chain(chain)
            ids += chain_ids
            units += [offset + unit for unit in chain_units]
            offset += len(chain)
        ids += self.suffix
        units += [-1] * len(self.suffix)
        return ids, units

    def _encode_chain(self, chain) -> tuple[list[int], list[int]]:
        if self.unit_type == "residue":
            ids, units = [], []
            for position, letter in enumerate(chain):
                piece = self.residue_ids[letter]
                ids += piece
                units += [position] * len(piece)
            return ids, units
        encoding = self.tokenizer(list(chain), is_split_into_words=True, add_special_tokens=False)
        word_ids = encoding.word_ids()
        return list(encoding["input_ids"]), [-1 if w is None else w for w in word_ids]


class MetaEmbedProcessor:
    """Holds every backbone's tokenizer and turns sequences (or ligand/receptor complexes) into model inputs.

    Call it with `sequences` (architecture `single`) or with `ligand=` and `receptor=` lists of chains (pair
    architectures). It returns `input_ids`, `attention_mask` and `token_unit_index` shaped
    `(segments, backbones, tokens)`, `unit_mask (segments, units)`, and for pairs `segment_sample_index` and
    `segment_side_index (segments,)`.

    Protein input is normalised as documented: whitespace removed, letters upper-cased, letters a backbone's
    vocabulary lacks read as X. Text is split into words on whitespace. Anything else is an error naming the sample
    (docs/RELIABILITY.md lists them): a non-string, an empty or whitespace-only string, invalid Unicode, letters that
    are not amino acids (unless `unknown_residues="x"`), or prose given to protein backbones.

    `long_sequences`: `"error"` (default) rejects an input longer than a backbone accepts, naming the sample, the
    backbone and its limit; `"window"` lets it through for a model whose config sets a window policy
    (`window_size`), which reads it in sliding windows.

    `model_types`: each backbone's `config.model_type` (filled by `from_backbones`, saved with the processor); it
    picks the backbone's family record (`BackboneFamily`), which says e.g. which token separates joined chains. None
    (processors saved by release 0.1): the generic record, whose separator rule every shipped family shares.
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
    ) -> None:
        if unknown_residues not in ("error", "x"):
            raise ValueError(f"unknown_residues must be 'error' or 'x', got {unknown_residues!r}")
        if long_sequences not in LONG_SEQUENCE_POLICIES:
            raise ValueError(
                f"unknown long_sequences {long_sequences!r}; choose one of: {', '.join(LONG_SEQUENCE_POLICIES)}"
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
        self.backbones = [
            BackboneTokenization(tok, kind, limit, name, backbone_family(model_type))
            for tok, kind, limit, name, model_type in zip(
                self.tokenizers, self.unit_types, self.max_lengths, self.backbone_names, self.model_types
            )
        ]

    # ---------------------------------------------------------------- construction, saving, loading

    @classmethod
    def from_backbones(
        cls,
        backbones: list[str],
        *,
        revisions: list[str | None] | None = None,
        unit_types: list[str] | None = None,
        **kwargs,
    ) -> "MetaEmbedProcessor":
        """Load each backbone's tokenizer (and config, for its length limit) from a Hub id or local folder."""
        revisions = list(revisions or [None] * len(backbones))
        tokenizers, kinds, limits, model_types = [], [], [], []
        for index, (name, revision) in enumerate(zip(backbones, revisions)):
            config = load_backbone_config(str(name), revision, index)
            tokenizer = AutoTokenizer.from_pretrained(str(name), revision=revision)
            if getattr(tokenizer, "add_prefix_space", None) is False:
                # byte-level BPE (RoBERTa, GPT-2) only tokenizes pre-split words with a prefix space
                tokenizer = AutoTokenizer.from_pretrained(str(name), revision=revision, add_prefix_space=True)
            tokenizers.append(tokenizer)
            kinds.append(unit_types[index] if unit_types else infer_unit_type(tokenizer, config))
            limits.append(_token_limit(tokenizer, config))
            model_types.append(config.model_type)
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
            with open(os.path.join(staging, PROCESSOR_CONFIG_NAME), "w", encoding="utf-8") as handle:
                json.dump(settings, handle, indent=2, sort_keys=True)
        return [os.path.join(save_directory, PROCESSOR_CONFIG_NAME)]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "MetaEmbedProcessor":
        """Load a processor saved with `save_pretrained` (a local folder or a Hub repo)."""
        hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
        path = cached_file(pretrained_model_name_or_path, PROCESSOR_CONFIG_NAME, **hub_kwargs)
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)
        settings.pop("auto_map", None)
        settings.pop("processor_class", None)
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

    def _normalise(self, item, sample: int, where: str, counts: dict) -> dict[str, object]:
        """Per unit type, the chain as the backbones of that type read it (residue string or word list)."""
        if not isinstance(item, str):
            raise TypeError(f"sample {sample}{where}: expected a string, got {type(item).__name__} ({item!r:.40})")
        if not item.strip():
            raise ValueError(f"sample {sample}{where}: the sequence is empty or whitespace only; remove the sample")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"sample {sample}{where}: character {error.start} ({item[error.start]!r}) is a lone surrogate, not "
                "valid Unicode; decode the input file properly (e.g. errors='replace')"
            ) from None
        read = {}
        if "residue" in self.unit_types:
            if _looks_like_text(item):
                raise ValueError(
                    f"sample {sample}{where}: this looks like text, not a protein ({item!r:.40}): words of different "
                    "lengths between spaces. This processor's backbones read residues: pass amino-acid sequences "
                    "(spaces may separate single residues, or equal blocks as UniProt prints them; if this is a "
                    "protein, remove its spaces), or use text backbones for text"
                )
            residues = "".join(item.split())
            # only ASCII letters are upper-cased: str.upper() would turn "ß" into "SS", two valid residues
            bad = sorted({letter for letter in residues if not _is_residue(letter)})
            if bad:
                if self.unknown_residues == "error":
                    raise ValueError(
                        f"sample {sample}{where}: {bad} are not amino-acid letters (allowed: "
                        f"{STANDARD_RESIDUES} and {EXTRA_RESIDUES}, either case); fix the sequence, or pass "
                        "unknown_residues='x' to read them as X"
                    )
                counts["mapped_to_x"] = counts.get("mapped_to_x", 0) + sum(not _is_residue(r) for r in residues)
                residues = "".join(r if _is_residue(r) else "X" for r in residues)
            read["residue"] = residues.upper()
        if "word" in self.unit_types:
            read["word"] = item.split()
        return read

    # ---------------------------------------------------------------- encoding

    def _encode_segment(self, chains: list[dict], sample: int, where: str, truncation: bool, stats: dict) -> dict:
        """Encode one segment for every backbone, enforcing (or, if chosen, applying) each backbone's limit."""
        units = {kind: sum(len(chain[kind]) for chain in chains) for kind in chains[0]}
        encoded = [backbone.encode([chain[backbone.unit_type] for chain in chains]) for backbone in self.backbones]
        for index, (backbone, (ids, _)) in enumerate(zip(self.backbones, encoded)):
            if backbone.max_length is None or len(ids) <= backbone.max_length:
                continue
            if not truncation and self.long_sequences == "window":
                continue
            if not truncation:
                lengths = "+".join(str(len(chain[backbone.unit_type])) for chain in chains)
                raise ValueError(
                    f"sample {sample}{where}: backbone {index} ({backbone.name}) accepts at most "
                    f"{backbone.max_length} tokens, this input ({len(chains)} chain(s) of {lengths} units) needs "
                    f"{len(ids)}; read it in sliding windows (a model config with window_size, e.g. 1022 for ESM-2, "
                    "and MetaEmbedProcessor(..., long_sequences='window')), shorten or split it, or pass "
                    "truncation=True to cut the end of every chain by the same share, keeping at least one unit of "
                    "each (a warning counts what was cut)"
                )
            chains = self._truncate(chains, index, stats, sample, where)
            return self._encode_segment(chains, sample, where, truncation, stats)
        num_units = max(units.values())
        return {
            "input_ids": [ids for ids, _ in encoded],
            "token_unit_index": [unit_index for _, unit_index in encoded],
            "num_units": num_units,
        }

    def _truncate(self, chains: list[dict], index: int, stats: dict, sample: int, where: str) -> list[dict]:
        """Cut the segment until backbone `index` fits: every chain loses the same share of its units from its end and
        keeps at least one, so no chain (and no side of a joined `sc` complex) is ever dropped.

        The largest fitting share is found by binary search on the number of units kept.
        """
        backbone = self.backbones[index]
        kind = backbone.unit_type
        lengths = [len(chain[kind]) for chain in chains]
        total = sum(lengths)

        def cut(keep: int) -> list[dict]:
            # about keep / total of every chain; non-decreasing in `keep`, so the binary search below is valid
            counts = [max(1, length * keep // total) for length in lengths]
            return [{k: v[:count] for k, v in chain.items()} for chain, count in zip(chains, counts)]

        def fits(keep: int) -> bool:
            ids, _ = backbone.encode([chain[kind] for chain in cut(keep)])
            return len(ids) <= backbone.max_length

        if not fits(0):
            raise ValueError(
                f"sample {sample}{where}: backbone {index} ({backbone.name}) accepts at most {backbone.max_length} "
                f"tokens, too few for one unit of each of the {len(chains)} chains with their separators; split the "
                "complex into fewer chains"
            )
        low, high = 0, total
        while low < high:
            middle = (low + high + 1) // 2
            if fits(middle):
                low = middle
            else:
                high = middle - 1
        kept = cut(low)
        stats["truncated_segments"] = stats.get("truncated_segments", 0) + 1
        stats["truncated_units"] = stats.get("truncated_units", 0) + total - sum(len(chain[kind]) for chain in kept)
        return kept

    def _segments(self, sequences, ligand, receptor, architecture: str) -> list[list[tuple[int, list]]]:
        """Per sample, its segments as (side, chains), laid out as the architecture's `layout` says."""
        if sequences is not None:
            if ligand is not None or receptor is not None:
                raise ValueError("pass either `sequences` or `ligand`/`receptor`, not both")
            if isinstance(sequences, str):
                sequences = [sequences]
            sequences = _as_list(sequences, "sequences")
            if PAIRINGS.get_class(architecture).is_pair:
                example = f" ({str(sequences[0])!r:.30})" if len(sequences) else ""
                raise ValueError(
                    f"sample 0 is a plain sequence{example} but architecture {architecture!r} "
                    "compares two sides: call the processor with ligand=[[chain, ...], ...] and "
                    "receptor=[[chain, ...], ...]"
                )
            return [[(0, [sequence])] for sequence in sequences]
        if ligand is None or receptor is None:
            raise ValueError("pass `sequences`, or both `ligand` and `receptor`")
        if not PAIRINGS.get_class(architecture).is_pair:
            raise ValueError(
                "sample 0 is a ligand/receptor complex but architecture 'single' reads plain sequences: call the "
                "processor with a list of sequences, or use a pair architecture (sc, ec, hp, pad) for complexes"
            )
        ligand, receptor = _as_list(ligand, "ligand"), _as_list(receptor, "receptor")
        if len(ligand) != len(receptor):
            missing = "receptor" if len(ligand) > len(receptor) else "ligand"
            raise ValueError(
                f"ligand lists {len(ligand)} complexes but receptor lists {len(receptor)}: sample "
                f"{min(len(ligand), len(receptor))} has no {missing}; give one of each per sample"
            )
        samples = []
        for index, sides in enumerate(zip(ligand, receptor)):
            for side, chains in zip(("ligand", "receptor"), sides):
                if isinstance(chains, str) or not isinstance(chains, Sequence):
                    raise ValueError(
                        f"sample {index}: the {side} must be a list of chain strings, got {type(chains).__name__} "
                        f"({chains!r:.30}); wrap a single chain as [chain]"
                    )
                if not chains:
                    raise ValueError(f"sample {index}: the {side} has no chains; every side needs at least one chain")
            samples.append(layout_segments(list(sides[0]), list(sides[1]), architecture))
        return samples

    def encode_segment(
        self,
        chains: Sequence[str],
        *,
        sample: int = 0,
        where: str = "",
        truncation: bool | None = None,
        stats: dict | None = None,
    ) -> dict:
        """Encode one segment (what one backbone pass reads: a sequence, a chain, a side, or a joined complex) exactly
        as `__call__` encodes it inside a batch.

        Args:
            chains: the segment's chains, as given (normalised here as documented).
            sample, where: how errors name the segment (`"sample 12 (ligand): ..."`).
            truncation: as in `__call__` (defaults to the processor's setting).
            stats: a dict that collects truncation and X-mapping counts over several calls (see `warn_about`).

        Returns:
            `{"input_ids": [ids per backbone], "token_unit_index": [per backbone], "num_units": int}`.
        """
        truncation = self.truncation if truncation is None else truncation
        stats = {} if stats is None else stats
        read = [self._normalise(chain, sample, where, stats) for chain in chains]
        return self._encode_segment(read, sample, where, truncation, stats)

    @staticmethod
    def warn_about(stats: dict, stacklevel: int = 2) -> None:
        """Warn once for what `encode_segment` counted in `stats`: units cut by truncation, letters read as X."""
        if stats.get("truncated_segments"):
            warnings.warn(
                f"truncation cut {stats['truncated_units']} units from {stats['truncated_segments']} inputs that "
                "were longer than a backbone accepts",
                stacklevel=stacklevel,
            )
        if stats.get("mapped_to_x"):
            warnings.warn(f"{stats['mapped_to_x']} non-amino-acid characters were read as X", stacklevel=stacklevel)

    @staticmethod
    def segment_label(architecture: str, side: int) -> str:
        """How error messages name a segment: its side, or both sides for a joined (`sc`) complex."""
        layout = PAIRINGS.get_class(architecture).layout
        if layout == "single":
            return ""
        if layout == "joined":
            return " (ligand and receptor joined)"
        return f" ({('ligand', 'receptor')[side]})"

    def __call__(
        self,
        sequences: str | list[str] | None = None,
        *,
        ligand: list[list[str]] | None = None,
        receptor: list[list[str]] | None = None,
        return_tensors: str | None = "pt",
        truncation: bool | None = None,
        architecture: str | None = None,
    ) -> BatchEncoding | list[dict]:
        """Encode a batch.

        Args:
            sequences: protein sequences or texts (architecture `single`).
            ligand, receptor: per complex, the list of chains of each side (pair architectures).
            return_tensors: `"pt"` for a padded batch, None for a list of per-sample features (pad them later with
                `pad`, e.g. as a `Trainer` data collator).
            truncation: cut inputs longer than a backbone accepts (with a warning) instead of raising.
            architecture: overrides the processor's `architecture` for this call.
        """
        architecture = architecture or self.architecture
        truncation = self.truncation if truncation is None else truncation
        samples = self._segments(sequences, ligand, receptor, architecture)
        if not samples:
            raise ValueError("the batch is empty: pass at least one sequence")
        stats: dict[str, int] = {}
        features = []
        for index, segments in enumerate(samples):
            encoded_segments = []
            for side, chains in segments:
                where = self.segment_label(architecture, side)
                segment = self.encode_segment(chains, sample=index, where=where, truncation=truncation, stats=stats)
                segment["segment_side"] = side
                encoded_segments.append(segment)
            features.append({"segments": encoded_segments})
        self.warn_about(stats, stacklevel=3)
        if return_tensors is None:
            return features
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        return self.pad(features, architecture=architecture)

    def pad(self, features: list[dict], architecture: str | None = None) -> BatchEncoding:
        """Pad per-sample features (from `__call__(..., return_tensors=None)`) into a batch of tensors.

        Any `labels` in the features are stacked (per-unit label lists, with `per_unit_labels=True`, are padded with
        -100). Usable as a
        `Trainer` data collator.
        """
        architecture = architecture or self.architecture
        if not features:
            raise ValueError("cannot pad an empty list of features")
        segments = [segment for feature in features for segment in feature["segments"]]
        count = len(self.backbones)
        tokens = max(len(ids) for segment in segments for ids in segment["input_ids"])
        units = max(segment["num_units"] for segment in segments)
        input_ids = torch.empty(len(segments), count, tokens, dtype=torch.long)
        for index, backbone in enumerate(self.backbones):
            input_ids[:, index] = backbone.pad_id
        attention_mask = torch.zeros(len(segments), count, tokens, dtype=torch.long)
        token_unit_index = torch.full((len(segments), count, tokens), -1, dtype=torch.long)
        unit_mask = torch.zeros(len(segments), units, dtype=torch.long)
        for row, segment in enumerate(segments):
            for index, (ids, unit_index) in enumerate(zip(segment["input_ids"], segment["token_unit_index"])):
                input_ids[row, index, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, index, : len(ids)] = 1
                token_unit_index[row, index, : len(ids)] = torch.tensor(unit_index, dtype=torch.long)
            unit_mask[row, : segment["num_units"]] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_unit_index": token_unit_index,
            "unit_mask": unit_mask,
        }
        if architecture != "single":
            batch["segment_sample_index"] = torch.tensor(
                [i for i, feature in enumerate(features) for _ in feature["segments"]], dtype=torch.long
            )
            batch["segment_side_index"] = torch.tensor([s["segment_side"] for s in segments], dtype=torch.long)
        if "labels" in features[0]:
            labels = [feature["labels"] for feature in features]
            batch["labels"] = _pad_unit_labels(labels, units) if self.per_unit_labels else torch.as_tensor(labels)
        return BatchEncoding(batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"


def _is_residue(letter: str) -> bool:
    """An amino-acid letter in either case (ASCII only)."""
    return letter.isascii() and letter.upper() in PROTEIN_LETTERS


def _looks_like_text(item: str) -> bool:
    """Words of different lengths between whitespace: prose, not a protein.

    Proteins may hold whitespace between single residues ("M K T A", as ProtT5 reads them) or between equal blocks
    with a shorter last one (UniProt prints blocks of 10, FASTA wraps lines at 60 or 80); neither counts as text.
    """
    lengths = [len(chunk) for chunk in item.split()]
    if len(lengths) < 2 or max(lengths) == 1:
        return False
    return len(set(lengths[:-1])) > 1 or lengths[-1] > lengths[0]


def _as_list(value, name: str) -> list:
    """A batch argument as a list; a string or a non-iterable is a `TypeError` that says what to pass."""
    if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
        raise TypeError(f"`{name}` must be a list, got {type(value).__name__} ({value!r:.40})")
    return list(value)


def _pad_unit_labels(labels: list[list[int]], units: int) -> torch.Tensor:
    """Per-unit labels padded with -100 (ignored by the loss) to `(samples, units)`."""
    padded = torch.full((len(labels), units), -100, dtype=torch.long)
    for row, values in enumerate(labels):
        padded[row, : len(values)] = torch.as_tensor(values, dtype=torch.long)
    return padded


def _token_limit(tokenizer, config) -> int | None:
    """Longest token sequence a backbone accepts: the tokenizer's limit, capped by absolute positions where the
    backbone's family has them (`BackboneFamily.absolute_positions`; relative T5 does not)."""
    limits = []
    if tokenizer.model_max_length and tokenizer.model_max_length < _UNBOUNDED:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(config, "max_position_embeddings", None)
    absolute = backbone_family(config.model_type).absolute_positions
    if isinstance(positions, int) and absolute and not math.isinf(positions):
        limits.append(positions)
    return min(limits) if limits else None


MetaEmbedProcessor.register_for_auto_class()

__all__ = ["MetaEmbedProcessor", "PROTEIN_LETTERS"]
