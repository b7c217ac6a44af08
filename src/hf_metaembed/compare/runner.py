"""`Comparison`: check every choice, read each backbone once into the feature cache, run every cell of the grid on
the cached states (resumably, optionally in parallel processes), then write and return the result table.

Order of work, so bad input fails before any backbone runs: (1) the choices (fusions, poolings, layers,
architectures, metric, budget), the labels (two classes or more for classification) and the splits (test items in
every fold) are checked; (2) the backbones are loaded (no forward pass yet) and layer indices checked against them;
(3) `hf_metaembed.cache.build_feature_cache` runs each backbone once over each unique segment of the data (a
complete cache is reused: a resumed comparison runs no backbone), and the code files of a trusted backbone that
ships its own are copied to `output_dir/backbone_code/` (a backbone with its own code that is not trusted was
refused in (1)); (4) every (cell, seed) run not already on disk
trains and tests on the cached states and is written atomically to `runs/`; (5) the table is computed from the
run files and written.

`output_dir/protocol.json` records what makes runs comparable (data, backbones, task, budget, splits, fixed model
settings); a run file made under another protocol is never mixed in: the comparison refuses the folder instead.
The grid (fusions, layers, poolings, architectures, subsets, seeds) is not part of it, so a grid can be extended
in the same folder and only the new runs train.
"""

import hashlib
import json
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..io.files import atomic_write_json, remove_leftover_temporaries
from .grid import (
    Cell,
    build_grid,
    check_architectures,
    check_fusions,
    check_layers,
    check_poolings,
    is_fitted_fusion,
)
from .reading import read_backbones_once
from .report import markdown_table, write_reports
from .splits import SplitError, Splits, check_labels_in_splits, column_splits, identity_splits, kfold_splits
from .statistics import DEFAULT_METRIC, check_metric
from .summary import run_rows, summarise
from .training import Budget, CellSkipped, RunContext, run_cell

PROTOCOL_FILE = "protocol.json"
SPLITS_FILE = "splits.json"
RUNS_FOLDER = "runs"
# the code files of backbones that ship their own, copied once by the read; cells rebuild those backbones from them
CODE_FOLDER = "backbone_code"


class ComparisonError(ValueError):
    """A comparison that cannot run as asked; the message says what to change."""


@dataclass
class ComparisonResult:
    """The result table of a comparison.

    Attributes:
        rows: one dict per cell (its settings, `value` with `ci_low`/`ci_high`, `seed_std`, every metric's mean and
            spread over seeds, and for fusions `effect`, `effect_low`, `effect_high`, `p_value` against
            `reference`, the best single backbone of its context); `best` marks the best cell.
        runs: one dict per (cell, seed) with every metric.
        skipped: cells that could not run, with the reason.
        files: the written outputs (`cells_csv`, `runs_csv`, `json`, `plot`).
        summary: the protocol, the splits, the cache and the backbone forward counts.
    """

    task: str
    metric: str
    rows: list[dict]
    runs: list[dict]
    skipped: list[dict]
    files: dict[str, Path]
    summary: dict = field(default_factory=dict)

    @property
    def best(self) -> dict:
        return next(row for row in self.rows if row["best"])

    def to_markdown(self, title: str | None = None) -> str:
        table = markdown_table(self.rows, self.task, title)
        notes = [f"- skipped {entry['cell']}: {entry['reason']}" for entry in self.skipped]
        return table + ("\n\n" + "\n".join(notes) if notes else "")


def _class_names(labels: Sequence) -> list[str]:
    """Distinct labels as names: numbers in numeric order, then other names alphabetically."""

    def number(name: str):
        try:
            return float(name)
        except ValueError:
            return None

    names = {str(label) for label in labels}
    return sorted(names, key=lambda name: (number(name) is None, number(name) or 0.0, name))


def infer_task(labels: Sequence, task: str) -> str:
    """`task` when given; "auto": regression when every label is a number and one is not a whole number, else
    classification."""
    if task not in ("auto", "classification", "regression"):
        raise ComparisonError(f"unknown task {task!r}; choose one of: auto, classification, regression")
    if task != "auto":
        return task
    numbers = []
    for label in labels:
        try:
            numbers.append(float(label))
        except (TypeError, ValueError):
            return "classification"
    return "regression" if any(number != int(number) for number in numbers) else "classification"


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def _short_names(backbones: Sequence[str]) -> list[str]:
    names = [Path(str(name).rstrip("/")).name or str(name) for name in backbones]
    return [f"{name}#{i}" if names.count(name) > 1 else name for i, name in enumerate(names)]


class Comparison:
    """Does fusing help, and which fusion? Every cell trained and tested on the same splits, seeds and budget, from
    one read of each backbone.

    Args:
        backbones: backbone folders or Hub ids (two or more), as `from_backbones` takes them.
        sequences: the plain sequences (texts or proteins), or
        ligand, receptor: per complex the chains of each side (pair architectures).
        labels: one label per sample: class names or ids (classification) or numbers (regression).
        output_dir: where the cache, the run files and the results go (resumed when it holds this comparison).
        names: how tables name the backbones (default: their folder names).
        task: "auto", "classification" or "regression".
        fusions, layers, poolings, architectures: the grid's choices (`grid`); None for the defaults.
        subsets: also fuse every subset of two or more backbones.
        seeds: seeds per cell (`seed`, `seed + 1`, ...): each changes initialisation, dropout and batch order.
        folds: k-fold cross-validation (default 5 when neither `split` nor `identity` is given), or
        split: per sample its part (train, validation, test), from a split column, or
        identity: the identity-clustered split of `hf_metaembed.data.identity_split` at this identity (e.g. 0.3).
        metric: the metric of the intervals, the paired tests and the best cell (default: accuracy or Spearman).
        budget: epochs, patience, learning rate, weight decay, batch size (the same for every cell).
        model_settings: fixed `MetaEmbedConfig` settings for every cell (e.g. `head`, `unit_encoder`, `fusion_dim`).
        reader_settings: extra `from_backbones` settings for reading (e.g. `unit_types`, `subword_pooling`).
        backbone_trust_remote_code: run the own modelling code of backbones that ship it (an `auto_map` in their
            config.json): one flag for all, or one per backbone, as `from_backbones` takes it. Without it such a
            backbone is refused at once, before any backbone is loaded; with it its code files are copied to
            `output_dir/backbone_code/` and every cell (and worker process) rebuilds it from that copy.
        truncation: cut inputs longer than a backbone accepts (else such an input is an error).
        jobs: parallel worker processes for the runs.
        resamples, permutations: of the bootstrap intervals and the permutation tests.
        device: where the backbones run while the cache is built (cells train on the CPU).
        cache_dir: the feature cache (default: `output_dir/feature_cache`).
        progress: show progress bars.
    """

    def __init__(
        self,
        backbones: Sequence[str],
        *,
        labels: Sequence,
        output_dir: str | os.PathLike,
        sequences: Sequence[str] | None = None,
        ligand: Sequence[Sequence[str]] | None = None,
        receptor: Sequence[Sequence[str]] | None = None,
        names: Sequence[str] | None = None,
        task: str = "auto",
        fusions: Sequence[str] | None = None,
        layers: Sequence[str | int] | None = None,
        poolings: Sequence[str] | None = None,
        architectures: Sequence[str] | None = None,
        subsets: bool = False,
        seeds: int = 1,
        seed: int = 0,
        folds: int | None = None,
        split: Sequence[str] | None = None,
        identity: float | None = None,
        metric: str | None = None,
        budget: Budget | None = None,
        model_settings: dict | None = None,
        reader_settings: dict | None = None,
        backbone_trust_remote_code: bool | Sequence[bool] = False,
        truncation: bool = False,
        jobs: int = 1,
        resamples: int = 1000,
        permutations: int = 1000,
        device: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        self.backbones = [str(backbone) for backbone in backbones]
        self.names = list(names) if names is not None else _short_names(self.backbones)
        if len(self.names) != len(self.backbones):
            raise ComparisonError(f"{len(self.names)} names for {len(self.backbones)} backbones; give one each")
        try:
            self._check_choices(fusions, layers, poolings, architectures, subsets, sequences, ligand, receptor)
            self.budget = (budget or Budget()).check()
            self.task = infer_task(labels, task)
            self.metric = check_metric(metric or DEFAULT_METRIC[self.task], self.task)
        except ValueError as error:
            raise ComparisonError(str(error)) from None
        self.trusted = self._check_own_code(backbone_trust_remote_code, reader_settings)
        counts = {"seeds": seeds, "jobs": jobs, "resamples": resamples, "permutations": permutations}
        for name, value in counts.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ComparisonError(f"{name} must be a positive integer, got {value!r}")
        self.inputs = {"sequences": list(sequences)} if ligand is None else {"ligand": ligand, "receptor": receptor}
        count = len(sequences) if ligand is None else len(ligand)
        if len(labels) != count:
            raise ComparisonError(f"{len(labels)} labels for {count} samples; give one label per sample")
        self.class_names = _class_names(labels) if self.task == "classification" else None
        if self.task == "classification":
            if len(self.class_names) < 2:
                raise ComparisonError(
                    f"every label is {self.class_names[0]!r}; classification needs two or more classes (or pass "
                    "task='regression' for numbers)"
                )
            index = {name: i for i, name in enumerate(self.class_names)}
            self.labels = [index[str(label)] for label in labels]
        else:
            self.labels = [float(label) for label in labels]
        self.seeds = [seed + offset for offset in range(seeds)]
        self.splits = self._make_splits(folds, split, identity, seed)
        self.model_settings = dict(model_settings or {})
        self.reader_settings = dict(reader_settings or {})
        self.truncation = truncation
        self.jobs, self.resamples, self.permutations = jobs, resamples, permutations
        self.device, self.progress = device, progress
        self.output_dir = Path(output_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.output_dir / "feature_cache"
        self.cells = build_grid(
            len(self.backbones), self.fusions, self.layers, self.poolings, self.architectures, subsets
        )

    # ------------------------------------------------------------------------------------------ checks

    def _check_own_code(self, trust, reader_settings: dict | None) -> list[bool]:
        """`backbone_trust_remote_code` as one flag per backbone, after refusing (before anything is loaded, so
        transformers never asks "[y/N]") every backbone that ships its own modelling code and is not trusted."""
        from ..modeling.remote_code_backbones import own_code_map, trust_flags

        if "backbone_trust_remote_code" in (reader_settings or {}):
            raise ComparisonError(
                "give backbone_trust_remote_code to the comparison itself (compare(..., backbone_trust_remote_code="
                "True)), not in reader_settings: the processor and every cell need it too"
            )
        try:
            trusted = trust_flags(trust, len(self.backbones))
        except ValueError as error:
            raise ComparisonError(str(error)) from None
        for index, (name, flag) in enumerate(zip(self.backbones, trusted)):
            if flag:
                continue
            try:
                own = own_code_map(name)
            except (OSError, ValueError):  # not found or unreadable: loading the backbones says so
                continue
            if own:
                raise ComparisonError(
                    f"backbone {index} ({name}) ships its own modelling code (auto_map {sorted(own)} in its "
                    "config.json), which runs on your machine when the comparison reads it; if you trust it, pass "
                    f"backbone_trust_remote_code=True (or a list with True at position {index}) to compare (CLI: "
                    "--backbone-trust-remote-code)"
                )
        return trusted

    def _check_choices(self, fusions, layers, poolings, architectures, subsets, sequences, ligand, receptor) -> None:
        if (sequences is None) == (ligand is None) or (ligand is None) != (receptor is None):
            raise ValueError("pass sequences=[...] for plain sequences, or ligand=[[...]] and receptor=[[...]]")
        if len(self.backbones) < 2:
            raise ValueError(f"a comparison needs two or more backbones, got {len(self.backbones)}")
        self.fusions = check_fusions(fusions)
        self.layers = check_layers(layers)
        self.poolings = check_poolings(poolings)
        self.architectures = check_architectures(architectures, pairs=ligand is not None)
        self.subsets = bool(subsets)

    def _make_splits(self, folds, split, identity, seed: int) -> Splits:
        given = [name for name, value in (("folds", folds), ("split", split), ("identity", identity)) if value]
        if len(given) > 1:
            raise ComparisonError(f"choose one way to split ({' or '.join(given)}), not {len(given)}")
        try:
            if split is not None:
                if len(split) != len(self.labels):
                    raise SplitError(f"{len(split)} split values for {len(self.labels)} samples")
                splits = column_splits(split, "split", seed)
            elif identity is not None:
                if "sequences" in self.inputs:
                    records = self.inputs["sequences"]
                else:
                    records = [_Complex(lig, rec) for lig, rec in zip(self.inputs["ligand"], self.inputs["receptor"])]
                splits = identity_splits(records, identity=identity, seed=seed)
            else:
                splits = kfold_splits(self._named_labels(), folds or 5, seed, stratify=self.task == "classification")
            check_labels_in_splits(splits, self._named_labels(), self.task)
        except SplitError as error:
            raise ComparisonError(str(error)) from None
        return splits

    def _named_labels(self) -> list:
        """Class names (classification) or numbers, as errors should show them."""
        if self.class_names is None:
            return self.labels
        return [self.class_names[label] for label in self.labels]

    # ------------------------------------------------------------------------------------------ protocol

    def protocol(self) -> dict:
        """What makes two runs comparable (see the module docstring)."""
        return {
            "data": _digest([self.inputs, self.labels]),
            "samples": len(self.labels),
            "backbones": self.backbones,
            "task": self.task,
            "class_names": self.class_names,
            "budget": asdict(self.budget),
            "splits": self.splits.digest,
            "split_method": self.splits.method,
            "stacked_layers": self.layers != ["last"],
            "model_settings": self.model_settings,
            "reader_settings": self.reader_settings,
            "truncation": self.truncation,
        }

    def _open_output(self) -> str:
        """Create the output folder or check that it holds this comparison; returns the protocol digest."""
        protocol = self.protocol()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / PROTOCOL_FILE
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            differences = [key for key in sorted(set(stored) | set(protocol)) if stored.get(key) != protocol.get(key)]
            if differences:
                raise ComparisonError(
                    f"{self.output_dir} holds a comparison made with other {', '.join(differences)}; its runs cannot "
                    "be mixed with these: choose another output folder, or delete that one"
                )
        atomic_write_json(path, protocol)
        atomic_write_json(self.output_dir / SPLITS_FILE, self.splits.to_json())
        runs = self.output_dir / RUNS_FOLDER
        runs.mkdir(exist_ok=True)
        remove_leftover_temporaries(runs)
        return _digest(protocol)

    # ------------------------------------------------------------------------------------------ runs

    def _run_path(self, cell: Cell, seed: int) -> Path:
        return self.output_dir / RUNS_FOLDER / f"{cell.key(self.names)}.seed{seed}.json"

    def _finished(self, cell: Cell, seed: int, protocol: str) -> dict | None:
        path = self._run_path(cell, seed)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
        if record.get("protocol") != protocol or Cell.from_json(record["cell"]) != cell:
            return None
        return record

    def run(self) -> ComparisonResult:
        """Run the comparison (see the module docstring) and return its result table."""
        import torch
        from tqdm.auto import tqdm

        protocol = self._open_output()
        skipped = self._skipped_upfront()
        try:
            reading = read_backbones_once(
                self.backbones,
                self.names,
                self.inputs,
                self.architectures,
                self.layers,
                self.cache_dir,
                reader_settings=self.reader_settings,
                trusted=self.trusted,
                code_dir=self.output_dir / CODE_FOLDER,
                truncation=self.truncation,
                device=self.device,
                progress=self.progress,
            )
        except ValueError as error:
            raise ComparisonError(str(error)) from None
        config, hidden_states, cache_summary = reading.config, reading.hidden_states, reading.summary
        threads = torch.get_num_threads() if self.jobs == 1 else max(1, torch.get_num_threads() // self.jobs)
        context = RunContext(
            cache_dir=str(self.cache_dir),
            reader_settings=config,
            hidden_states=hidden_states,
            stacked_layers=self.layers != ["last"],
            inputs=self.inputs,
            labels=self.labels,
            task=self.task,
            class_names=self.class_names,
            splits=self.splits,
            budget=self.budget,
            fixed_settings=self.model_settings,
            threads=threads,
            protocol=protocol,
            code_dir=reading.code_dir,
        )
        runnable = [cell for cell in self.cells if cell not in skipped]
        records: dict[Cell, list[dict]] = {cell: [] for cell in runnable}
        pending = []
        for cell in runnable:
            for seed in self.seeds:
                record = self._finished(cell, seed, protocol)
                if record is None:
                    pending.append((cell, seed))
                else:
                    records[cell].append(record)
        resumed = sum(len(done) for done in records.values())
        bar = tqdm(
            total=len(runnable) * len(self.seeds),
            initial=resumed,
            desc="compare: cells x seeds",
            unit="run",
            disable=not self.progress,
        )
        previous_threads = torch.get_num_threads()
        try:
            for cell, record in self._execute(context, pending, protocol):
                records[cell].append(record)
                bar.update(1)
        finally:
            bar.close()
            torch.set_num_threads(previous_threads)
        for cell in runnable:
            reasons = [record["skipped"] for record in records[cell] if "skipped" in record]
            if reasons:
                skipped[cell] = reasons[0]
                records[cell] = []
        return self._finish(records, skipped, cache_summary, resumed, len(pending))

    def _skipped_upfront(self) -> dict[Cell, str]:
        """Fusions that say they must be fitted but that `hf_metaembed.fitting` cannot fit."""
        from ..fitting import fitted_fusion_names

        return {
            cell: f"fusion {cell.fusion!r} must be fitted before training, and hf_metaembed.fitting cannot fit it on "
            f"cached features (it fits: {', '.join(fitted_fusion_names())})"
            for cell in self.cells
            if not cell.alone and is_fitted_fusion(cell.fusion) and cell.fusion not in fitted_fusion_names()
        }

    def _execute(self, context: RunContext, pending: list[tuple[Cell, int]], protocol: str):
        """Yield `(cell, record)` for every pending run as it finishes (each written to its file first)."""
        jobs = [(cell, seed, str(self._run_path(cell, seed))) for cell, seed in pending]
        if self.jobs == 1 or len(jobs) <= 1:
            for cell, seed, path in jobs:
                yield cell, _execute_run(context, cell, seed, path)
            return
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or torch state
        workers = min(self.jobs, len(jobs))
        with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_start_worker, initargs=(context,)) as pool:
            futures = {pool.submit(_execute_in_worker, cell, seed, path): cell for cell, seed, path in jobs}
            for future in as_completed(futures):
                yield futures[future], future.result()

    def _finish(self, records, skipped, cache_summary, resumed: int, ran: int) -> ComparisonResult:
        order = self.splits.test_items
        test_labels = np.asarray(self.labels)[order]
        rows = summarise(
            self.cells,
            records,
            test_labels,
            self.task,
            self.metric,
            self.names,
            resamples=self.resamples,
            permutations=self.permutations,
            seed=self.seeds[0],
        )
        if not rows:
            raise ComparisonError("no cell could run; see the skipped cells' reasons")
        runs = run_rows(records, test_labels, self.task, self.names)
        skipped_list = [{"cell": f"{c.label(self.names)} ({c.fusion})", "reason": r} for c, r in skipped.items()]
        summary = {
            "task": self.task,
            "metric": self.metric,
            "backbones": dict(zip(self.names, self.backbones)),
            "protocol": self.protocol(),
            "splits": {"method": self.splits.method, "digest": self.splits.digest, "folds": len(self.splits.folds)},
            "seeds": self.seeds,
            "cache": cache_summary,
            "runs_resumed": resumed,
            "runs_trained": ran,
            "skipped": skipped_list,
        }
        files = write_reports(self.output_dir, rows, runs, self.task, summary)
        return ComparisonResult(self.task, self.metric, rows, runs, skipped_list, files, summary)


@dataclass
class _Complex:
    """A complex as `identity_split` reads it."""

    ligand: list[str]
    receptor: list[str]
    pdb: str | None = None


def _execute_run(context: RunContext, cell: Cell, seed: int, path: str) -> dict:
    try:
        record = run_cell(context, cell, seed)
    except CellSkipped as reason:
        record = {"cell": cell.to_json(), "seed": seed, "skipped": str(reason)}
    record["protocol"] = context.protocol
    atomic_write_json(path, record)
    return record


_CONTEXT: RunContext | None = None


def _start_worker(context: RunContext) -> None:
    global _CONTEXT
    _CONTEXT = context


def _execute_in_worker(cell: Cell, seed: int, path: str) -> dict:
    return _execute_run(_CONTEXT, cell, seed, path)


def compare(backbones: Sequence[str], **kwargs) -> ComparisonResult:
    """`Comparison(backbones, **kwargs).run()`: see `Comparison` for the arguments."""
    return Comparison(backbones, **kwargs).run()


__all__ = ["Comparison", "ComparisonError", "ComparisonResult", "compare", "infer_task"]
