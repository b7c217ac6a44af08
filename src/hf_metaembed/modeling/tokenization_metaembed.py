"""How one backbone's tokenizer reads a segment (a list of chains): its special-token frame, chain separators, the
token -> unit map, the amino-acid alphabet and the longest input it accepts.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its sibling files.
"""

import math
from collections.abc import Sequence

from .backbone_families import GENERIC_FAMILY, BackboneFamily, backbone_family

STANDARD_RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
# accepted amino-acid letters beyond the 20: unknown (X), selenocysteine (U), pyrrolysine (O), ambiguous B and Z
EXTRA_RESIDUES = "XUOBZ"
PROTEIN_LETTERS = frozenset(STANDARD_RESIDUES + EXTRA_RESIDUES)
# `token_unit_index` of a prompt's tokens: like special tokens (-1) they belong to no unit, and reading also leaves
# them out of every sequence pooling (special tokens are pooled where `pool_special_tokens` or a decoder says so)
PROMPT_TOKEN = -2
# a tokenizer "limit" at least this large means unlimited (transformers' VERY_LARGE_INTEGER placeholder)
_UNBOUNDED = 10**8


def special_token_frame(tokenizer, probe: str) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a sequence (e.g. [CLS] ... [SEP], <cls> ... <eos>)."""
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    without = tokenizer(probe, add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(without) + 1):
        if with_special[start : start + len(without)] == without:
            return with_special[:start], with_special[start + len(without) :]
    return [], []


class BackboneTokenization:
    """How one backbone turns a segment (a list of chains) into token ids and a token -> unit map.

    `prompts`: this backbone's instruction prompts by name (`{"query": "Instruct: ...\\nQuery: "}`), as a
    sentence-transformers model keeps them; `encode(..., prompt_name=...)` puts that prompt's tokens after the
    backbone's leading special tokens, with unit index `PROMPT_TOKEN`. A family that reads an EOS state
    (`BackboneFamily.append_eos`, decoders) gets the tokenizer's EOS token appended when its frame lacks one.
    """

    def __init__(
        self,
        tokenizer,
        unit_type: str,
        max_length: int | None,
        name: str,
        family: BackboneFamily = GENERIC_FAMILY,
        prompts: dict[str, str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.unit_type = unit_type
        self.max_length = max_length
        self.name = name
        self.prefix, self.suffix = special_token_frame(tokenizer, "A" if unit_type == "residue" else "a")
        eos = getattr(tokenizer, "eos_token_id", None)
        if family.append_eos and eos is not None and self.suffix[-1:] != [eos]:
            self.suffix = [*self.suffix, eos]
        self.prompts = dict(prompts or {})
        self.prompt_ids = {
            prompt_name: list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
            for prompt_name, text in self.prompts.items()
        }
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

    def encode(self, chains: Sequence, prompt_name: str | None = None) -> tuple[list[int], list[int]]:
        """Token ids and the unit of each token (-1 for special tokens, `PROMPT_TOKEN` for the prompt's) for one
        segment of chains, after the prompt `prompt_name` when this backbone has one of that name.

        `chains` holds residue strings (protein) or word lists (text); units are numbered across chains.
        """
        prompt = self.prompt_ids.get(prompt_name, []) if prompt_name is not None else []
        ids, units = [*self.prefix, *prompt], [-1] * len(self.prefix) + [PROMPT_TOKEN] * len(prompt)
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


def is_residue(letter: str) -> bool:
    """An amino-acid letter in either case (ASCII only)."""
    return letter.isascii() and letter.upper() in PROTEIN_LETTERS


def looks_like_text(item: str) -> bool:
    """Words of different lengths between whitespace: prose, not a protein.

    Proteins may hold whitespace between single residues ("M K T A", as ProtT5 reads them) or between equal blocks
    with a shorter last one (UniProt prints blocks of 10, FASTA wraps lines at 60 or 80); neither counts as text.
    """
    lengths = [len(chunk) for chunk in item.split()]
    if len(lengths) < 2 or max(lengths) == 1:
        return False
    return len(set(lengths[:-1])) > 1 or lengths[-1] > lengths[0]


def token_limit(tokenizer, config) -> int | None:
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


def normalise_item(
    item, unit_types: list[str], sample: int, where: str, counts: dict, unknown_residues: str
) -> dict[str, object]:
    """Per unit type in `unit_types`, the chain as the backbones of that type read it (residue string or word list);
    input that no backbone can read is an error naming the sample (`where`: its side or chain) and the fix."""
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
    if "residue" in unit_types:
        if looks_like_text(item):
            raise ValueError(
                f"sample {sample}{where}: this looks like text, not a protein ({item!r:.40}): words of different "
                "lengths between spaces. This processor's backbones read residues: pass amino-acid sequences "
                "(spaces may separate single residues, or equal blocks as UniProt prints them; if this is a "
                "protein, remove its spaces), or use text backbones for text"
            )
        residues = "".join(item.split())
        # only ASCII letters are upper-cased: str.upper() would turn "ß" into "SS", two valid residues
        bad = sorted({letter for letter in residues if not is_residue(letter)})
        if bad:
            if unknown_residues == "error":
                raise ValueError(
                    f"sample {sample}{where}: {bad} are not amino-acid letters (allowed: "
                    f"{STANDARD_RESIDUES} and {EXTRA_RESIDUES}, either case); fix the sequence, or pass "
                    "unknown_residues='x' to read them as X"
                )
            counts["mapped_to_x"] = counts.get("mapped_to_x", 0) + sum(not is_residue(r) for r in residues)
            residues = "".join(r if is_residue(r) else "X" for r in residues)
        read["residue"] = residues.upper()
    if "word" in unit_types:
        read["word"] = item.split()
    return read
