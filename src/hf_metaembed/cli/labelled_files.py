"""Reading the labelled files of `hf-metaembed train` and `evaluate`: plain sequences (`--column`) or ligand-receptor
complexes (`--ligand-column` and `--receptor-column`, several chains in one cell split on `--chain-separator`), with
their labels; dissociation constants become regression labels with `--label-transform` (a PPB-Affinity-format table of
complexes is read by `hf_metaembed.data.load_ppb_affinity`).
"""

import sys
from pathlib import Path

from ..data.ppb_affinity import DUPLICATE_RULES
from ..integrations.metrics import KD_UNITS, LABEL_TRANSFORMS, get_label_transform
from ..io.records import InputError, PairRecord, detect_input_format, read_pair_records, read_records
from .errors import UsageError, one_line
from .labels import LabelledData, as_number, describe


def pair_columns(args) -> tuple[str, str] | None:
    """`(ligand column, receptor column)` for complexes, None for plain sequences; one of the two alone is an error."""
    if (args.ligand_column is None) != (args.receptor_column is None):
        given = "--ligand-column" if args.ligand_column is not None else "--receptor-column"
        raise UsageError(f"{given} alone: complexes need both --ligand-column and --receptor-column")
    return (args.ligand_column, args.receptor_column) if args.ligand_column is not None else None


def _check_choice(flag: str, value: str | None, choices) -> None:
    if value is not None and value not in choices:
        raise UsageError(f"{flag} {value}: unknown; choose one of: {', '.join(choices)}")


def read_labelled(args, path: str) -> LabelledData:
    """Every record of a labelled file (training data is held in memory) with its label."""
    name = Path(path).name
    input_format = detect_input_format(path, args.input_format)
    if input_format in ("fasta", "text"):
        raise InputError(f"{name}: {input_format} files carry no labels; use CSV, TSV or JSONL")
    _check_choice("--label-transform", args.label_transform, LABEL_TRANSFORMS)
    _check_choice("--duplicates", args.duplicates, DUPLICATE_RULES)
    if args.label_transform and args.kd_unit not in KD_UNITS:
        raise UsageError(f"unknown --kd-unit {args.kd_unit!r}; choose one of: {', '.join(KD_UNITS)}")
    pairs = pair_columns(args)
    if pairs and args.label_transform:
        return _read_affinity_table(args, path, pairs)
    if args.min_chain_length or args.duplicates != "keep":
        raise UsageError("--min-chain-length and --duplicates curate complexes with KD labels: add --label-transform")
    if pairs:
        records = read_pair_records(
            path,
            input_format,
            ligand_columns=[pairs[0]],
            receptor_columns=[pairs[1]],
            chain_separator=args.chain_separator,
            id_column=args.id_column,
            extra_columns=[args.label_column],
        )
    else:
        records = read_records(path, input_format, args.column, args.id_column, [args.label_column])
    records = list(records)
    if not records:
        raise InputError(f"{name} holds no records")
    labels = [record.fields[args.label_column] for record in records]
    if args.label_transform:
        return LabelledData(name, records, _kd_labels(args, name, records, labels), transformed=True)
    return LabelledData(name, records, labels)


def _read_affinity_table(args, path: str, columns: tuple[str, str]) -> LabelledData:
    """Complexes with KD labels through the PPB-Affinity loader (its row checks, its optional curation)."""
    from ..data.ppb_affinity import load_ppb_affinity

    try:
        dataset = load_ppb_affinity(
            path,
            ligand_column=columns[0],
            receptor_column=columns[1],
            label_column=args.label_column,
            pdb_column=None,
            split_column=None,
            chain_separator=args.chain_separator,
            label_transform=args.label_transform,
            kd_unit=args.kd_unit,
            min_chain_length=args.min_chain_length,
            duplicates=args.duplicates,
        )
    except ValueError as error:  # a bad row (named), a missing column, an unknown rule
        raise InputError(one_line(error)) from None
    report = dataset.report
    if report.dropped or report.duplicate_groups:
        print(f"hf-metaembed: curation of {report}", file=sys.stderr)
    if not dataset.records:
        raise InputError(f"{Path(path).name}: no complex is left after curation; see the report above")
    name = Path(path).name
    records = [
        PairRecord(record.row, str(record.row + 1), record.ligand, record.receptor, file=name, line=record.line)
        for record in dataset
    ]
    return LabelledData(Path(path).name, records, [record.label for record in dataset], transformed=True)


def _kd_labels(args, name: str, records: list, values: list) -> list[float]:
    """Labels of single sequences whose label column holds dissociation constants."""
    transform = get_label_transform(args.label_transform)
    labels = []
    for record, value in zip(records, values):
        kd = as_number(value)
        if kd is None or kd <= 0:
            raise InputError(
                f"{describe(record)}: {args.label_column!r} is {value!r}, not a positive KD in "
                f"{args.kd_unit}; fix or drop the row"
            )
        labels.append(float(transform(kd, args.kd_unit)))
    return labels
