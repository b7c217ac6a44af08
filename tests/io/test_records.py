"""Readers of `hf_metaembed.io.records`: streamed records of every format, table rows for both contracts (one column
as `Record`s, whole rows as dicts), and table rows turned into model inputs, with errors naming file, line or row."""

import csv
import gzip
import json
from pathlib import Path

import pytest

from hf_metaembed.io.records import InputError, read_pair_records, read_records, read_rows, records_to_inputs


def _write_inputs(folder: Path, texts: list[str]) -> dict[str, Path]:
    """The same records as CSV, JSONL (with blank lines) and plain text."""
    paths = {"csv": folder / "in.csv", "jsonl": folder / "in.jsonl", "text": folder / "in.txt"}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "text", "label"])
        writer.writerows([f"r{i}", text, i % 2] for i, text in enumerate(texts))
    with open(paths["jsonl"], "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"name": f"r{i}", "text": text}) + "\n" + ("\n" if i % 3 == 0 else ""))
    paths["text"].write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    return paths


def test_readers_stream_records(tmp_path):
    paths = _write_inputs(tmp_path, ["a b", "c", "d e f"])
    records = list(read_records(paths["jsonl"], column="text", id_column="name"))
    assert [(r.index, r.id, r.text) for r in records] == [(0, "r0", "a b"), (1, "r1", "c"), (2, "r2", "d e f")]
    records = list(read_records(paths["csv"], column="text", extra_columns=["label"]))
    assert [r.fields["label"] for r in records] == ["0", "1", "0"]
    tsv = tmp_path / "in.tsv"
    tsv.write_text("sequence\tid\nMKT\tx\nGSH\ty\n")
    assert [(r.id, r.text) for r in read_records(tsv, id_column="id")] == [("x", "MKT"), ("y", "GSH")]
    big = tmp_path / "big.txt"
    big.write_text("".join(f"line {i}\n" for i in range(50_000)))
    stream = read_records(big)
    assert next(stream).text == "line 0"  # a generator: nothing is read ahead of what is asked
    with pytest.raises(InputError, match="before the first '>'"):
        list(read_records(tmp_path / "in.txt", input_format="fasta"))


def test_rows_keep_every_column_and_json_values(tmp_path):
    paths = _write_inputs(tmp_path, ["a b", "c"])
    assert list(read_rows(paths["csv"])) == [
        (2, {"name": "r0", "text": "a b", "label": "0"}),
        (3, {"name": "r1", "text": "c", "label": "1"}),
    ]
    lines = tmp_path / "complexes.jsonl.gz"
    with gzip.open(lines, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"ligand": ["MKT", "GSH"], "receptor": "AAA", "kd": 1e-9}) + "\n\n")
        handle.write(json.dumps({"ligand": "WYW", "receptor": "CCC", "kd": 2e-9}) + "\n")
    rows = list(read_rows(lines))
    assert [number for number, _ in rows] == [1, 3]  # blank lines are skipped, line numbers kept
    assert rows[0][1] == {"ligand": ["MKT", "GSH"], "receptor": "AAA", "kd": 1e-9}


def test_rows_report_the_file_line_and_columns(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("sequence,label\nMKT,1\n")
    with pytest.raises(InputError, match=r"t\.csv: no column 'x'; available columns: 'sequence', 'label'"):
        list(read_rows(table, columns=["x"]))
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"sequence": "MKT"}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"b\.jsonl line 2: expected a JSON object, got list"):
        list(read_rows(broken))
    fasta = tmp_path / "s.fasta"
    fasta.write_text(">a\nMKT\n")
    with pytest.raises(InputError, match="fasta files have no columns"):
        list(read_rows(fasta))
    latin = tmp_path / "l.tsv"
    latin.write_bytes("sequence\nMK\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"l\.tsv: not UTF-8 text"):
        list(read_rows(latin))
    with pytest.raises(InputError, match="does not exist"):
        list(read_rows(tmp_path / "absent.csv"))


def test_records_need_text_in_their_column(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("id,sequence\nx\n")
    with pytest.raises(
        InputError, match=r"short\.csv line 2 \(record 1\): the row has no value for column 'sequence'"
    ):
        list(read_records(short))
    numbers = tmp_path / "n.jsonl"
    numbers.write_text('{"sequence": 7}\n')
    with pytest.raises(InputError, match=r"n\.jsonl line 1 \(record 1\): field 'sequence' holds int, not a string"):
        list(read_records(numbers))


def test_rows_become_sequences_or_complexes():
    rows = [{"sequence": "MKT", "y": "1"}, {"sequence": "GSH", "y": "0"}]
    assert records_to_inputs(rows) == {"sequences": ["MKT", "GSH"]}
    complexes = [
        {"l1": "MKT", "l2": "", "receptor": "AAA;CCC"},
        {"l1": "WYW", "l2": "GSH", "receptor": ["DDD", " "]},
    ]
    inputs = records_to_inputs(
        complexes, ligand_columns=["l1", "l2"], receptor_columns=["receptor"], chain_separator=";"
    )
    assert inputs == {"ligand": [["MKT"], ["WYW", "GSH"]], "receptor": [["AAA", "CCC"], ["DDD"]]}
    with pytest.raises(InputError, match=r"^record 1: the ligand has no chain \(columns l2 are empty\)"):
        records_to_inputs(complexes, ligand_columns=["l2"], receptor_columns=["receptor"])
    with pytest.raises(InputError, match=r"^pairs\.csv line 2 \(record 1\): the ligand has no chain"):
        records_to_inputs(
            complexes, ligand_columns=["l2"], receptor_columns=["receptor"], lines=[2, 3], file="pairs.csv"
        )
    with pytest.raises(InputError, match="found: l1, l2, receptor"):
        records_to_inputs(complexes)
    with pytest.raises(InputError, match="no rows"):
        records_to_inputs([])


def test_records_are_numbered_as_people_count_with_their_lines(tmp_path):
    fasta = tmp_path / "p.fasta"
    fasta.write_text("; comment\n>a first\nMKT\nAAA\n\n>b\nGSH\n", encoding="utf-8")
    first, second = read_records(fasta)
    assert (first.line, second.line) == (2, 6)
    assert second.where() == "p.fasta line 6 (record 2, id 'b')"
    text = tmp_path / "t.txt"
    text.write_text("one\n\ntwo\n", encoding="utf-8")
    records = list(read_records(text))
    assert [r.id for r in records] == ["1", "2"]  # default ids are the record numbers, from 1
    assert records[1].where() == "t.txt line 3 (record 2)"
    table = tmp_path / "q.csv"
    table.write_text('sequence\n"MKT\nAAA"\nGSH\n', encoding="utf-8")  # a quoted cell spans lines 2 and 3
    records = list(read_records(table))
    assert [(r.line, r.id) for r in records] == [(2, "1"), (4, "2")]
    assert records[1].where() == "q.csv line 4 (record 2)"
    pairs = tmp_path / "c.jsonl"
    pairs.write_text('{"l": "MKT", "r": "GSH"}\n\n{"l": "AAA", "r": "CCC"}\n', encoding="utf-8")
    complexes = list(read_pair_records(pairs, ligand_columns=["l"], receptor_columns=["r"]))
    assert complexes[1].where() == "c.jsonl line 3 (record 2)"
