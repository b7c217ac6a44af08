"""The options of a `MetaEmbedProcessor` call: the processor's own settings every call may override, and the
standard tokenizer keywords (`padding`, `truncation`, `max_length`, `return_tensors`) with their usual values.

Model code (copied next to a saved model for `trust_remote_code`): imports the standard library and siblings only.
"""

from typing import NamedTuple

from .pairing import PAIRINGS
from .pairing_perceiver import PerceiverPairing  # noqa: F401  (registers architecture "perceiver")

# "window": inputs longer than a backbone accepts pass through, for a model with a window policy to read in windows
LONG_SEQUENCE_POLICIES = ("error", "window")
UNKNOWN_RESIDUE_POLICIES = ("error", "x")
# the settings a saved processor stores that `from_pretrained` and every call may override
CALL_OPTIONS = ("architecture", "truncation", "unknown_residues", "per_unit_labels", "long_sequences", "prompt_name")
# tokenizer keyword values (transformers' `PaddingStrategy` and `TruncationStrategy` are str enums of these)
PADDING_VALUES = {True: "longest", "longest": "longest", "max_length": "max_length", False: False, "do_not_pad": False}
TRUNCATION_VALUES = {
    True: True,
    "longest_first": True,
    "only_first": True,
    "only_second": True,
    False: False,
    "do_not_truncate": False,
}
RETURN_TENSORS = ("pt", "np", None)


class EncodingOptions(NamedTuple):
    """The options one call encodes with (the processor's settings where the call gives none)."""

    truncation: bool
    unknown_residues: str
    long_sequences: str
    max_length: int | None
    prompt_name: str | None = None


def check_options(**options) -> None:
    """Raise a `ValueError` naming the setting and its choices for an invalid value (None: not given)."""
    choices = {
        "truncation": tuple(TRUNCATION_VALUES),
        "unknown_residues": UNKNOWN_RESIDUE_POLICIES,
        "long_sequences": LONG_SEQUENCE_POLICIES,
        "per_unit_labels": (True, False),
    }
    for name, value in options.items():
        if value is None:
            continue
        if name == "architecture":
            PAIRINGS.get_class(value)  # an unknown name lists the registered architectures
        elif value not in choices[name] or (name == "per_unit_labels" and not isinstance(value, bool)):
            raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, choices[name]))}")


def padding_strategy(padding, return_tensors) -> str | bool:
    """`padding` as "longest", "max_length" or False; None: pad when tensors are asked for."""
    if padding is None:
        return "longest" if return_tensors is not None else False
    if padding not in PADDING_VALUES:
        raise ValueError(f"unknown padding {padding!r}; choose one of: {', '.join(map(str, PADDING_VALUES))}")
    return PADDING_VALUES[padding]


def round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple
