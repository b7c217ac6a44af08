"""The grid of a comparison: which cells there are, and the checks of the choices that make them.

A cell is one model trained on cached features: a set of backbones (one backbone alone, or several fused), a fusion,
a layer choice, a pooling and an architecture. The grid holds, for every combination of the chosen layers, poolings
and architectures (a *context*), each backbone alone (its states straight into the head: `concat` of one backbone is
the identity) and every chosen fusion over all backbones, or over every subset of two or more with `subsets=True`.

Fusions come from the fusion registry (`hf_metaembed.modeling.fusion.FUSIONS`). The default list is `concat`,
`average` when it is registered, `dme`, `cdme`, and every registered fusion that must be fitted before training
(a *fitted* fusion: one of `hf_metaembed.fitting.fitted_fusion_names()`, or a class that sets `needs_fitting = True`
or defines `fit`), fitted on each fold's training part; one that `hf_metaembed.fitting` cannot fit is skipped with
its reason recorded, never silently.
"""

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from itertools import combinations, product

from ..fitting import fitted_fusion_names
from ..modeling.fusion import FUSIONS, list_fusions
from ..modeling.pairing import PAIRINGS, list_architectures
from ..modeling.pooling import list_poolings

BASE_FUSIONS = ("concat", "average", "dme", "cdme")
SINGLE_FUSION = "concat"  # one backbone through concat is its own states


@dataclass(frozen=True)
class Cell:
    """One model of the grid.

    Attributes:
        backbones: indices (into the comparison's backbone list) of the backbones it reads.
        fusion: the fusion name (`concat` for a backbone alone).
        layer: `"last"`, `"mix"` or a hidden-state index, for every backbone with more than one hidden state.
        pooling: a pooling name, or None for the architecture's default.
        architecture: the architecture name (`single` for plain sequences).
    """

    backbones: tuple[int, ...]
    fusion: str
    layer: str | int = "last"
    pooling: str | None = None
    architecture: str = "single"

    @property
    def alone(self) -> bool:
        return len(self.backbones) == 1

    @property
    def context(self) -> tuple:
        """What a fusion is compared within: the same layer, pooling and architecture."""
        return (self.layer, self.pooling, self.architecture)

    def label(self, names: list[str]) -> str:
        """`MiniLM` (alone) or `MiniLM + fastText` (fused): the backbones, as the table shows them."""
        return " + ".join(names[i] for i in self.backbones)

    def to_json(self) -> dict:
        return {**asdict(self), "backbones": list(self.backbones)}

    @classmethod
    def from_json(cls, value: dict) -> "Cell":
        return cls(**{**value, "backbones": tuple(value["backbones"])})

    def key(self, names: list[str]) -> str:
        """A file-name-safe identifier: readable settings plus a short digest of them."""
        digest = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:8]
        readable = "+".join(names[i] for i in self.backbones)
        readable = f"{readable}.{self.fusion}.{self.layer}.{self.pooling or 'default'}.{self.architecture}"
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", readable)[:100] + f".{digest}"


def is_fitted_fusion(name: str) -> bool:
    """Whether the registered fusion `name` must be fitted on features before training: one of the library's fitted
    fusions (`hf_metaembed.fitting.fitted_fusion_names()`), or a block that says so (`needs_fitting`, or a `fit`)."""
    cls = FUSIONS.get_class(name)
    if name in fitted_fusion_names():
        return True
    return bool(getattr(cls, "needs_fitting", False)) or callable(getattr(cls, "fit", None))


def default_fusions() -> list[str]:
    """`concat`, `average` (when registered), `dme`, `cdme`, then every registered fitted fusion."""
    registered = list_fusions()
    chosen = [name for name in BASE_FUSIONS if name in registered]
    return chosen + [name for name in registered if name not in chosen and is_fitted_fusion(name)]


def _choices(given, valid: list[str], kind: str, flag: str) -> list[str]:
    for name in given:
        if name not in valid:
            raise ValueError(f"unknown {kind} {name!r} in {flag}; choose from: {', '.join(valid)}")
    if len(set(given)) != len(given):
        raise ValueError(f"{flag} names a {kind} twice: {', '.join(given)}")
    return list(given)


def check_fusions(fusions) -> list[str]:
    """The fusions to compare (the default list when None); an unknown name lists the registered ones."""
    if fusions is None:
        return default_fusions()
    if not fusions:
        raise ValueError(f"--fusions is empty; choose from: {', '.join(list_fusions())}")
    return _choices(list(fusions), list_fusions(), "fusion", "--fusions")


def check_poolings(poolings) -> list[str | None]:
    """The poolings to compare (None: the architecture's default only); an unknown name lists the valid ones."""
    if poolings is None:
        return [None]
    return _choices(list(poolings), list_poolings(), "pooling", "--poolings")


def parse_layer(value) -> str | int:
    """`"last"`, `"mix"` or a hidden-state index (`-2`, `3`); anything else lists the valid forms."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text in ("last", "mix"):
        return text
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    raise ValueError(
        f"unknown layer {value!r} in --layers; choose from: last, mix, or a hidden-state index such as -2 (0 is the "
        "embedding output)"
    )


def check_layers(layers) -> list[str | int]:
    if layers is None:
        return ["last"]
    parsed = [parse_layer(layer) for layer in layers]
    if not parsed or len(set(parsed)) != len(parsed):
        raise ValueError(f"--layers must name each layer once, got {list(layers)!r}")
    return parsed


def check_layer_ranges(layers: list[str | int], hidden_states: list[int], names: list[str]) -> None:
    """Every index must exist in every backbone with more than one hidden state (a static table has one and always
    reads it)."""
    for layer in layers:
        if not isinstance(layer, int):
            continue
        for name, count in zip(names, hidden_states):
            if count > 1 and not -count <= layer < count:
                raise ValueError(
                    f"layer {layer} in --layers is out of range for backbone {name}, which has {count} hidden states; "
                    f"choose from: last, mix, or an index from {-count} to {count - 1}"
                )


def check_architectures(architectures, pairs: bool) -> list[str]:
    """The architectures to compare: `single` for plain sequences; for complexes the chosen pair architectures
    (default: every registered one)."""
    pair_names = [name for name in list_architectures() if PAIRINGS.get_class(name).is_pair]
    if not pairs:
        if architectures and list(architectures) != ["single"]:
            raise ValueError(
                f"--architectures {', '.join(architectures)} pair a ligand with a receptor, but the data holds plain "
                "sequences; name the ligand and receptor columns, or drop --architectures"
            )
        return ["single"]
    if architectures is None:
        return pair_names
    return _choices(list(architectures), pair_names, "pair architecture", "--architectures")


def build_grid(
    num_backbones: int,
    fusions: list[str],
    layers: list[str | int],
    poolings: list[str | None],
    architectures: list[str],
    subsets: bool = False,
) -> list[Cell]:
    """Every cell (see the module docstring), contexts in the order of the choices, singles before fusions."""
    if num_backbones < 2:
        raise ValueError(f"a comparison fuses two or more backbones; got {num_backbones}")
    sizes = range(2, num_backbones + 1) if subsets else [num_backbones]
    groups = [group for size in sizes for group in combinations(range(num_backbones), size)]
    cells = []
    for layer, pooling, architecture in product(layers, poolings, architectures):
        cells += [Cell((index,), SINGLE_FUSION, layer, pooling, architecture) for index in range(num_backbones)]
        cells += [Cell(group, fusion, layer, pooling, architecture) for group in groups for fusion in fusions]
    return cells


__all__ = [
    "BASE_FUSIONS",
    "Cell",
    "build_grid",
    "check_architectures",
    "check_fusions",
    "check_layer_ranges",
    "check_layers",
    "check_poolings",
    "default_fusions",
    "is_fitted_fusion",
    "parse_layer",
]
