"""Labels of `hf-metaembed train` and `evaluate`, read strictly: the task (given or inferred), the class names, and
the targets the model trains on.

A blank or NaN label is an error naming its records. The task is given (`--task`) or inferred: regression when every
label is a number and one is not an integer; classification when every label is an integer, or when every label is
text; numbers mixed with text (`3.5`, `high`, `low`) are an error naming both kinds and `--task`, never a classifier
over the typos.
Classification labels become the model's `label2id`, sorted.
"""

import math
import sys
from dataclasses import dataclass

from ..io.records import InputError, PairRecord, Record, where
from .errors import UsageError

# cells that mean "no value" in spreadsheets and pandas exports; a label never legitimately reads like this
MISSING_LABELS = {"", "nan", "-nan", "na", "n/a", "#n/a", "null", "none", "<na>"}
NOT_A_NUMBER = ("is not a number", "are not numbers")


@dataclass
class LabelledData:
    """The records of a labelled file and their labels (as read, or KD turned into floats by `--label-transform`)."""

    name: str
    records: list[Record] | list[PairRecord]
    labels: list
    transformed: bool = False

    @property
    def pairs(self) -> bool:
        return bool(self.records) and isinstance(self.records[0], PairRecord)


def _is_missing(value) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_LABELS


def as_number(value) -> float | None:
    """`value` as a finite float, or None when it is not one (a JSON boolean is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def describe(record) -> str:
    """`labels.csv line 5 (record 4)`, with the record's own id when it has one: how messages name a record."""
    return record.where()


def _short(record) -> str:
    """`line 5 (record 4)`: a record in a list after the file's name."""
    return where(None, record.line, record.index, record.id)


def _label_error(data: LabelledData, indices: list[int], column: str, problem: tuple[str, str], fix: str):
    """An `InputError` naming the records whose labels have `problem` (singular and plural wording) and the fix."""
    if len(indices) == 1:
        index = indices[0]
        return InputError(
            f"{describe(data.records[index])}, column {column!r}: label {data.labels[index]!r} {problem[0]}; {fix}"
        )
    shown = ", ".join(f"{_short(data.records[i])} ({data.labels[i]!r})" for i in indices[:10])
    shown += f" and {len(indices) - 10} more" if len(indices) > 10 else ""
    return InputError(
        f"{data.name}: {len(indices)} of {len(data.labels)} labels in column {column!r} {problem[1]}: {shown}; {fix}"
    )


def _check_no_missing(data: LabelledData, column: str) -> None:
    missing = [i for i, value in enumerate(data.labels) if _is_missing(value)]
    if missing:
        problem = ("is blank or NaN", "are blank or NaN")
        raise _label_error(data, missing, column, problem, "fill in the label or drop the row")


def infer_task(data: LabelledData, requested: str, column: str) -> tuple[str, str]:
    """`(task, why)`: the task to train, and how it was chosen (for the line printed before training)."""
    if data.transformed:
        if requested == "classification":
            raise UsageError("--label-transform turns KD into regression labels: drop --task classification")
        return "regression", "KD labels through --label-transform"
    _check_no_missing(data, column)
    numbers = [as_number(value) for value in data.labels]
    not_numbers = [i for i, number in enumerate(numbers) if number is None]
    if requested == "regression":
        if not_numbers:
            fix = "fix the label, or pass --task classification if the labels are class names"
            raise _label_error(data, not_numbers, column, NOT_A_NUMBER, fix)
        return "regression", "--task regression"
    if requested == "classification":
        return "classification", "--task classification"
    if not not_numbers:
        if any(number != int(number) for number in numbers):
            return "regression", "inferred: every label is a number, not all integers"
        return "classification", "inferred: every label is an integer; pass --task regression to predict numbers"
    if not_numbers and len(not_numbers) < len(numbers):  # numbers and text mixed: never guess which was meant
        names = sorted({str(data.labels[i]) for i in not_numbers})
        shown = ", ".join(repr(name) for name in names[:5]) + (", ..." if len(names) > 5 else "")
        if len(not_numbers) < len(numbers) - len(not_numbers):
            fix = (
                f"the other {len(numbers) - len(not_numbers)} labels are numbers: fix or drop those rows and pass "
                "--task regression, or pass --task classification to read every label as a class name"
            )
            raise _label_error(data, not_numbers, column, NOT_A_NUMBER, fix)
        numeric = [i for i, number in enumerate(numbers) if number is not None]
        fix = (
            f"the other {len(not_numbers)} labels are text ({shown}): pass --task classification to read every label "
            "as a class name, or --task regression after fixing the text labels"
        )
        raise _label_error(
            data, numeric, column, ("is a number among text labels", "are numbers among text labels"), fix
        )
    return "classification", "inferred: the labels are names"


def sorted_class_names(labels: list) -> list[str]:
    """The distinct labels as class names: numbers in numeric order, then names in alphabetical order."""
    names = {str(value) for value in labels}
    return sorted(names, key=lambda name: (as_number(name) is None, as_number(name) or 0.0, name))


def announce(command: str, task: str, why: str, data: LabelledData, names: list[str] | None) -> None:
    """Print the task and the label set to stderr (stdout holds only the metrics)."""
    if task == "classification":
        shown = ", ".join(repr(name) for name in names[:20]) + (", ..." if len(names) > 20 else "")
        detail = f"{len(names)} labels: {shown}"
    else:
        values = [float(value) for value in data.labels]
        detail = (
            f"{len(values)} labels from {min(values):.4g} to {max(values):.4g} (mean {sum(values) / len(values):.4g})"
        )
    print(f"hf-metaembed {command}: task {task} ({why}); {detail}", file=sys.stderr)


def encode_labels(data: LabelledData, task: str, label2id: dict | None, column: str) -> list:
    """Labels as the model's targets: floats (regression) or class ids (classification), strictly checked."""
    if not data.transformed:
        _check_no_missing(data, column)
    if task == "regression":
        numbers = [value if data.transformed else as_number(value) for value in data.labels]
        bad = [i for i, number in enumerate(numbers) if number is None]
        if bad:
            raise _label_error(data, bad, column, NOT_A_NUMBER, "a regression model needs a number in every row")
        return [float(number) for number in numbers]
    unknown = [i for i, value in enumerate(data.labels) if str(value) not in label2id]
    if unknown:
        problem = ("is not one of the model's labels", "are not among the model's labels")
        raise _label_error(data, unknown, column, problem, f"the model knows {sorted(label2id)}")
    return [label2id[str(value)] for value in data.labels]
