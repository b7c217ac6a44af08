"""Encoding one segment (what one backbone pass reads: a sequence, a chain, a side, or a joined complex) for every
backbone of a `MetaEmbedProcessor`: normalising its chains, enforcing each backbone's length limit (or truncating, as
chosen) and counting what was cut. Mixed into `MetaEmbedProcessor`.

Model code (copied next to a saved model for `trust_remote_code`): imports the standard library and its siblings.
"""

import warnings
from collections.abc import Sequence

from .pairing import PAIRINGS
from .processing_options import TRUNCATION_VALUES, EncodingOptions, check_options
from .segments import SIDE_NAMES
from .tokenization_metaembed import normalise_item


class SegmentEncoding:
    """The segment encoder of `MetaEmbedProcessor` (reads the processor's `backbones`, `unit_types` and settings)."""

    def _limit(self, index: int, options: "EncodingOptions") -> int | None:
        """The most tokens backbone `index` reads in this call: its own limit, or the call's `max_length` if lower."""
        limits = [limit for limit in (self.backbones[index].max_length, options.max_length) if limit is not None]
        return min(limits) if limits else None

    def _encode_segment(
        self, chains: list[dict], sample: int, where: str, stats: dict, options: "EncodingOptions"
    ) -> dict:
        """Encode one segment for every backbone, enforcing (or, if chosen, applying) each backbone's limit."""
        units = {kind: sum(len(chain[kind]) for chain in chains) for kind in chains[0]}
        encoded = [
            backbone.encode([chain[backbone.unit_type] for chain in chains], options.prompt_name)
            for backbone in self.backbones
        ]
        for index, (backbone, (ids, _)) in enumerate(zip(self.backbones, encoded)):
            limit = self._limit(index, options)
            if limit is None or len(ids) <= limit:
                continue
            if not options.truncation and options.long_sequences == "window" and limit == backbone.max_length:
                continue
            if not options.truncation:
                lengths = "+".join(str(len(chain[backbone.unit_type])) for chain in chains)
                bound = f"accepts at most {limit}" if limit == backbone.max_length else f"reads max_length={limit}"
                raise ValueError(
                    f"sample {sample}{where}: backbone {index} ({backbone.name}) {bound} tokens, this input "
                    f"({len(chains)} chain(s) of {lengths} units) needs {len(ids)}; read it in sliding windows "
                    "(a model config with window_size, e.g. 1022 for ESM-2, and MetaEmbedProcessor(..., "
                    "long_sequences='window')), shorten or split it, or pass truncation=True to cut the end of every "
                    "chain by the same share, keeping at least one unit of each (a warning counts what was cut)"
                )
            chains = self._truncate(chains, index, stats, sample, where, limit, options.prompt_name)
            return self._encode_segment(chains, sample, where, stats, options)
        num_units = max(units.values())
        return {
            "input_ids": [ids for ids, _ in encoded],
            "token_unit_index": [unit_index for _, unit_index in encoded],
            "num_units": num_units,
        }

    def _truncate(
        self,
        chains: list[dict],
        index: int,
        stats: dict,
        sample: int,
        where: str,
        limit: int,
        prompt_name: str | None = None,
    ) -> list[dict]:
        """Cut the segment until backbone `index` reads at most `limit` tokens: every chain loses the same share of its
        units from its end and keeps at least one, so no chain (and no side of a joined `sc` complex) is ever dropped.

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
            ids, _ = backbone.encode([chain[kind] for chain in cut(keep)], prompt_name)
            return len(ids) <= limit

        if not fits(0):
            raise ValueError(
                f"sample {sample}{where}: backbone {index} ({backbone.name}) reads at most {limit} tokens, "
                f"too few for one unit of each of the {len(chains)} chains with their separators; split the "
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

    def encode_segment(
        self,
        chains: Sequence[str],
        *,
        sample: int = 0,
        where: str = "",
        truncation: bool | str | None = None,
        stats: dict | None = None,
        unknown_residues: str | None = None,
        long_sequences: str | None = None,
        max_length: int | None = None,
        prompt_name: str | None = None,
    ) -> dict:
        """Encode one segment (what one backbone pass reads: a sequence, a chain, a side, or a joined complex) exactly
        as `__call__` encodes it inside a batch.

        Args:
            chains: the segment's chains, as given (normalised here as documented).
            sample, where: how errors name the segment (`"sample 12 (ligand): ..."`).
            truncation, unknown_residues, long_sequences, max_length, prompt_name: as in `__call__` (default: the
                processor's settings).
            stats: a dict that collects truncation and X-mapping counts over several calls (see `warn_about`).

        Returns:
            `{"input_ids": [ids per backbone], "token_unit_index": [per backbone], "num_units": int}`.
        """
        options = self._encoding_options(truncation, unknown_residues, long_sequences, max_length, prompt_name)
        return self._encode_chains(chains, sample, where, {} if stats is None else stats, options)

    def _encoding_options(
        self, truncation, unknown_residues, long_sequences, max_length, prompt_name=None
    ) -> "EncodingOptions":
        """The call's options, the processor's settings where the call gives none; invalid values raise."""
        prompt_name = self.prompt_name if prompt_name is None else prompt_name
        if prompt_name is not None and not any(prompt_name in backbone.prompts for backbone in self.backbones):
            known = sorted({name for backbone in self.backbones for name in backbone.prompts})
            raise ValueError(
                f"unknown prompt_name {prompt_name!r}: no backbone has a prompt of that name (prompts: "
                f"{', '.join(known) or 'none'}); give the processor prompts=[{{{prompt_name!r}: '...'}}, ...] (one "
                "dict per backbone, None for a backbone without prompts), or pick one of the names above"
            )
        check_options(truncation=truncation, unknown_residues=unknown_residues, long_sequences=long_sequences)
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(f"max_length must be a positive number of tokens, got {max_length!r}")
        return EncodingOptions(
            truncation=TRUNCATION_VALUES[self.truncation if truncation is None else truncation],
            unknown_residues=unknown_residues or self.unknown_residues,
            long_sequences=long_sequences or self.long_sequences,
            max_length=max_length,
            prompt_name=prompt_name,
        )

    def _encode_chains(self, chains, sample: int, where: str, stats: dict, options: "EncodingOptions") -> dict:
        read = [
            normalise_item(chain, self.unit_types, sample, where, stats, options.unknown_residues) for chain in chains
        ]
        return self._encode_segment(read, sample, where, stats, options)

    @staticmethod
    def warn_about(stats: dict, stacklevel: int = 2) -> None:
        """Warn once for what `encode_segment` counted in `stats`: units cut by truncation, letters read as X."""
        if stats.get("truncated_segments"):
            warnings.warn(
                f"truncation cut {stats['truncated_units']} units from {stats['truncated_segments']} inputs that "
                "were longer than a backbone (or the call's max_length) accepts",
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
        return f" ({SIDE_NAMES[side]})"


__all__ = ["SegmentEncoding"]
