"""PPB-Affinity loader: every table format, each bad-row error, and the study's curation steps with their counts."""

import csv
import gzip
import json
import math
import re

import numpy as np
import pytest

from hf_metaembed.data import (
    METHOD_PRIORITY,
    BadRowError,
    ComplexDataset,
    TableError,
    load_ppb_affinity,
)
from hf_metaembed.integrations.metrics import kd_to_pkd, kd_to_reference_label

COLUMNS = ["PDB", "Ligand Sequences", "Receptor Sequences", "KD(M)", "Affinity Method"]


def protein(seed: int, length: int = 60) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length))


L1, L2, R1, R2 = protein(1), protein(2, 45), protein(3, 80), protein(4)


def base_rows() -> list[dict]:
    return [
        {"PDB": "1abc", "Ligand Sequences": f"{L1},{L2}", "Receptor Sequences": R1, "KD(M)": "1e-9",
         "Affinity Method": "SPR"},
        {"PDB": "2XYZ", "Ligand Sequences": L2, "Receptor Sequences": f"{R1},{R2}", "KD(M)": "3.5e-7",
         "Affinity Method": "ITC"},
        {"PDB": "3DEF", "Ligand Sequences": R2, "Receptor Sequences": L1, "KD(M)": "2e-12", "Affinity Method": ""},
    ]  # fmt: skip


def write_table(folder, rows: list[dict], suffix: str):
    path = folder / f"table{suffix}"
    if suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="," if suffix == ".csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".jsonl.gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        pyarrow = pytest.importorskip("pyarrow")
        import pyarrow.parquet as parquet

        parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".jsonl.gz", ".parquet"])
def test_every_format_gives_the_same_records(tmp_path, suffix):
    data = load_ppb_affinity(write_table(tmp_path, base_rows(), suffix))
    assert isinstance(data, ComplexDataset) and len(data) == 3
    first, second, third = data
    assert first.ligand == [L1, L2] and first.receptor == [R1]
    assert second.ligand == [L2] and second.receptor == [R1, R2]
    assert [record.pdb for record in data] == ["1ABC", "2XYZ", "3DEF"]  # PDB ids are upper-cased
    assert [record.row for record in data] == [0, 1, 2]
    assert [record.method for record in data] == ["SPR", "ITC", "Unknown"]  # a blank method is Unknown
    np.testing.assert_allclose(data.labels, [9.0, -math.log10(3.5e-7), -math.log10(2e-12)], rtol=0, atol=1e-12)
    assert first.sequence == L1 + L2 + R1
    assert data.report.rows_read == 3 and data.report.kept == 3 and data.report.dropped == {}


def test_chains_may_use_another_separator_spaces_lists_and_lower_case(tmp_path):
    rows = base_rows()[:2]
    rows[0]["Ligand Sequences"] = f" {L1.lower()} ; {L2} "
    rows[1]["Ligand Sequences"] = L2
    rows[1]["Receptor Sequences"] = f"{R1};{R2}"
    data = load_ppb_affinity(write_table(tmp_path, rows, ".csv"), chain_separator=";")
    assert data[0].ligand == [L1, L2] and data[1].receptor == [R1, R2]
    # JSONL may hold each side as a list of chains
    rows = [dict(base_rows()[0], **{"Ligand Sequences": [L1, L2], "Receptor Sequences": [R1]})]
    assert load_ppb_affinity(write_table(tmp_path, rows, ".jsonl"))[0].ligand == [L1, L2]


@pytest.mark.parametrize(
    ("column", "value", "match", "reason"),
    [
        ("Ligand Sequences", f"{L1},,{L2}", "chain 2 of 3 is blank.*remove the stray ','", "blank chain"),
        ("Receptor Sequences", f"{R1},", "chain 2 of 2 is blank", "blank chain"),
        ("Ligand Sequences", "", "blank; give the side's chains", "blank sequence"),
        ("Receptor Sequences", R1[:10] + "1" + R1[10:], r"not amino acids: '1' \(first at residue 11\)",
         "not amino acids"),
        ("Ligand Sequences", L1 + "*", r"not amino acids: '\*'", "not amino acids"),
        ("KD(M)", "abc", "'abc' is not a number; write KD as a number", "bad KD"),
        ("KD(M)", "0", "'0' is not a positive finite KD", "bad KD"),
        ("KD(M)", "-1e-9", "not a positive finite KD", "bad KD"),
        ("KD(M)", "inf", "not a positive finite KD", "bad KD"),
        ("KD(M)", "", "blank; give the dissociation constant", "bad KD"),
        ("PDB", " ", "blank; fill in the PDB id", "blank PDB id"),
    ],
)  # fmt: skip
def test_a_bad_row_names_its_row_column_and_fix(tmp_path, column, value, match, reason):
    rows = base_rows()
    rows[2][column] = value
    path = write_table(tmp_path, rows, ".csv")
    with pytest.raises(
        # data row 2 (0-based, as `row` keeps it) is record 3, on line 4 after the header
        BadRowError,
        match=rf"table\.csv line 4 \(record 3\), column {re.escape(repr(column))}.*{match}",
    ) as info:
        load_ppb_affinity(path, min_chain_length=0)
    assert (info.value.row, info.value.column, info.value.reason) == (2, column, reason)
    # the same rows with on_bad_row="drop": the bad row is dropped and counted, the others kept
    data = load_ppb_affinity(path, min_chain_length=0, on_bad_row="drop")
    assert [record.row for record in data] == [0, 1]
    assert data.report.dropped == {reason: 1} and data.report.dropped_rows == {reason: [2]}


def test_short_chains_are_dropped_as_in_the_study(tmp_path):
    rows = base_rows()
    rows[0]["Receptor Sequences"] = f"{R1},{protein(9, 39)}"  # one chain one residue short of 40
    rows[1]["Ligand Sequences"] = protein(10, 40)  # exactly 40: kept
    data = load_ppb_affinity(write_table(tmp_path, rows, ".csv"))
    assert [record.row for record in data] == [1, 2]
    assert data.report.dropped == {"a chain shorter than 40 residues": 1}
    assert "dropped 1: a chain shorter than 40 residues (records 1)" in str(data.report)
    assert len(load_ppb_affinity(write_table(tmp_path, rows, ".csv"), min_chain_length=0)) == 3
    assert len(load_ppb_affinity(write_table(tmp_path, rows, ".csv"), min_chain_length=41)) == 1


def duplicate_rows() -> list[dict]:
    same = {"Ligand Sequences": L1, "Receptor Sequences": R1}
    return [
        {"PDB": "1AAA", **same, "KD(M)": "1e-6", "Affinity Method": "ITC"},
        {"PDB": "1AAA", "Ligand Sequences": L2, "Receptor Sequences": R2, "KD(M)": "1e-8", "Affinity Method": "SPR"},
        {"PDB": "1AAB", **same, "KD(M)": "2e-9", "Affinity Method": "SPR"},
        {"PDB": "1AAC", **same, "KD(M)": "4e-9", "Affinity Method": "SPR"},
        {"PDB": "1AAD", **same, "KD(M)": "1e-12", "Affinity Method": ""},
    ]


def test_reference_duplicates_keep_the_best_method_and_its_mean_kd(tmp_path):
    assert METHOD_PRIORITY.index("SPR") < METHOD_PRIORITY.index("ITC") < METHOD_PRIORITY.index("Unknown")
    data = load_ppb_affinity(write_table(tmp_path, duplicate_rows(), ".csv"))
    assert len(data) == 2
    merged = data[0]  # placed where its group first appeared (row 0)
    assert merged.row == 2 and merged.method == "SPR" and merged.pdb == "1AAB"  # the first SPR row
    assert merged.kd == pytest.approx(3e-9, rel=1e-12)  # arithmetic mean of the SPR KDs, as the study
    assert merged.label == pytest.approx(-math.log10(3e-9), abs=1e-12)
    assert merged.merged_rows == (0, 2, 3, 4)
    assert data[1].row == 1 and data[1].merged_rows == (1,)
    assert data.report.duplicate_groups == 1
    assert data.report.dropped == {"duplicate complex merged into another row (rule 'reference')": 3}


def test_an_unlisted_method_ranks_before_unknown_only(tmp_path):
    rows = duplicate_rows()
    rows[2]["Affinity Method"] = rows[3]["Affinity Method"] = "Other"
    rows[0]["Affinity Method"] = "Cryo-binding"  # not in the study's list
    merged = load_ppb_affinity(write_table(tmp_path, rows, ".csv"))[0]
    assert merged.method == "Other" and merged.kd == pytest.approx(3e-9)
    rows[2]["Affinity Method"] = rows[3]["Affinity Method"] = ""
    merged = load_ppb_affinity(write_table(tmp_path, rows, ".csv"))[0]
    assert merged.method == "Cryo-binding" and merged.kd == pytest.approx(1e-6)


@pytest.mark.parametrize(
    ("rule", "kd"),
    [
        ("median", 10 ** np.median(np.log10([1e-6, 2e-9, 4e-9, 1e-12]))),
        ("mean", 10 ** np.mean(np.log10([1e-6, 2e-9, 4e-9, 1e-12]))),
        ("first", 1e-6),
    ],
)
def test_other_duplicate_rules(tmp_path, rule, kd):
    data = load_ppb_affinity(write_table(tmp_path, duplicate_rows(), ".csv"), duplicates=rule)
    assert len(data) == 2 and data[0].row == 0 and data[0].kd == pytest.approx(kd, rel=1e-12)
    assert data[0].merged_rows == (0, 2, 3, 4)


def test_keep_rule_and_missing_method_column(tmp_path):
    assert len(load_ppb_affinity(write_table(tmp_path, duplicate_rows(), ".csv"), duplicates="keep")) == 5
    rows = [{key: value for key, value in row.items() if key != "Affinity Method"} for row in duplicate_rows()]
    data = load_ppb_affinity(write_table(tmp_path, rows, ".csv"))
    # without methods every row ranks 'Unknown': the study's rule is then the mean KD of all duplicates
    assert data[0].kd == pytest.approx(np.mean([1e-6, 2e-9, 4e-9, 1e-12]))
    assert any("no column 'Affinity Method'" in note for note in data.report.notes)


def test_label_transforms_and_units(tmp_path):
    path = write_table(tmp_path, base_rows(), ".csv")
    reference = load_ppb_affinity(path, label_transform="reference")
    np.testing.assert_allclose(reference.labels, kd_to_reference_label(np.array([1e-9, 3.5e-7, 2e-12])))
    assert reference[2].label == pytest.approx(9.99140, abs=1e-5)  # saturated: pKd is 11.7
    rows = base_rows()
    for row in rows:
        row["KD(nM)"] = row.pop("KD(M)")
    nanomolar = load_ppb_affinity(write_table(tmp_path, rows, ".csv"), label_column="KD(nM)", kd_unit="nM")
    np.testing.assert_allclose(nanomolar.labels, kd_to_pkd(np.array([1e-9, 3.5e-7, 2e-12]), "nM"))
    with pytest.raises(ValueError, match="unknown label transform 'pkD'; choose one of: pkd, reference"):
        load_ppb_affinity(path, label_transform="pkD")


def test_settings_and_columns_are_checked(tmp_path):
    path = write_table(tmp_path, base_rows(), ".csv")
    with pytest.raises(
        ValueError, match="has no column 'Ligand'; its columns are: PDB, Ligand Sequences.*ligand_column="
    ):
        load_ppb_affinity(path, ligand_column="Ligand")
    with pytest.raises(ValueError, match="no column 'pdb'.*pdb_column= naming the right one \\(or None\\)"):
        load_ppb_affinity(path, pdb_column="pdb")
    assert load_ppb_affinity(path, pdb_column=None)[0].pdb is None
    with pytest.raises(ValueError, match="unknown duplicates rule 'avg'; choose one of: reference, median, mean"):
        load_ppb_affinity(path, duplicates="avg")
    with pytest.raises(ValueError, match="on_bad_row is 'skip'"):
        load_ppb_affinity(path, on_bad_row="skip")
    with pytest.raises(ValueError, match="unknown KD unit 'kM'"):
        load_ppb_affinity(path, kd_unit="kM")


def test_sources_that_cannot_be_read(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TableError, match="HF_HUB_OFFLINE is set.*unset HF_HUB_OFFLINE"):
        load_ppb_affinity("proteinea/ppb_affinity", hub_config="raw")
    with pytest.raises(TableError, match="no file .*missing.csv"):
        load_ppb_affinity(tmp_path / "missing.csv")
    with pytest.raises(TableError, match="is a folder; pass the table file inside it"):
        load_ppb_affinity(tmp_path)
    (tmp_path / "table.xlsx").write_text("x")
    with pytest.raises(TableError, match="unknown table format '.xlsx'"):
        load_ppb_affinity(tmp_path / "table.xlsx")
    (tmp_path / "broken.jsonl").write_text(json.dumps(base_rows()[0]) + "\n{not json\n")
    with pytest.raises(TableError, match="broken.jsonl line 2: not valid JSON"):
        load_ppb_affinity(tmp_path / "broken.jsonl")


def test_rows_in_memory_and_the_study_split_column():
    rows = base_rows()
    for row, split in zip(rows, ["train", "validation", "test"], strict=True):
        row["split"] = split
    data = load_ppb_affinity(rows)
    assert [record.split for record in data] == ["train", "validation", "test"]
    pandas = pytest.importorskip("pandas")
    from_frame = load_ppb_affinity(pandas.DataFrame(rows))
    assert [record.ligand for record in from_frame] == [record.ligand for record in data]
    subset = data.select([2, 0])
    assert [record.pdb for record in subset] == ["3DEF", "1ABC"] and subset.report is data.report


def test_report_lists_every_reason(tmp_path):
    rows = duplicate_rows() + [dict(base_rows()[0], **{"KD(M)": "n/a"}), dict(base_rows()[1], **{"PDB": "9ZZZ"})]
    rows[-1]["Receptor Sequences"] = protein(11, 20)
    data = load_ppb_affinity(write_table(tmp_path, rows, ".tsv"), on_bad_row="drop")
    assert data.report.rows_read == 7 and data.report.kept == 2
    assert data.report.dropped == {
        "bad KD": 1,
        "a chain shorter than 40 residues": 1,
        "duplicate complex merged into another row (rule 'reference')": 3,
    }
    text = str(data.report)
    assert "7 rows read, 2 complexes kept" in text and "dropped 1: bad KD (records 6)" in text
    assert "1 complexes had several rows" in text


def test_hugging_face_datasets_in_memory_keep_their_split_names():
    datasets = pytest.importorskip("datasets")
    rows = base_rows()
    dataset_dict = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:2]), "test": datasets.Dataset.from_list(rows[2:])}
    )
    data = load_ppb_affinity(dataset_dict)
    assert [record.split for record in data] == ["train", "train", "test"]
    assert [record.pdb for record in load_ppb_affinity(dataset_dict["train"])] == ["1ABC", "2XYZ"]
