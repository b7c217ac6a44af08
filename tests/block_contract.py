"""The block contract: checks every registered block must pass, parametrised from the registries at collection time
(in the spirit of `transformers`' `ModelTesterMixin`), so a newly registered fusion, pooling, unit encoder,
architecture, head or loss is tested the day it is registered, with no new test code.

`contract_cases()` reads every registry (`registry.REGISTRIES`, the ones added later included) and places each block
in the smallest full model that exercises it (`CONTEXTS`): a fusion or a pooling under `single` and one pair
architecture, a unit encoder under every architecture (each `encoder_scope`), a head on a regression and a
classification task, an architecture and a loss at their defaults. A block class may declare `contract_settings`
(extra config its case needs); a block that must be fitted (`needs_fitting = True`, a `fit` method, or fitted tensors
it loads with `load_fitted`) is fitted on the tiny states with `hf_metaembed.fit_fusion` or its own one-argument
`fit`, and skipped with a reason naming what is missing otherwise, never silently.

`BlockContractTester` builds the models (two tiny ESM-style backbones of different widths, read once; every check
then feeds precomputed `backbone_states`) and holds the checks; `BlockContractMixin` turns them into test methods.
`RemoteRun` saves every case's model once and reloads one case per block as remote code, all in one interpreter that
cannot import hf_metaembed (`RemoteCodeContractMixin`).
"""

import copy
import inspect
import json
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from remote_code import run_without_the_library

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.fitting import fit_fusion, fitted_fusion_names
from hf_metaembed.modeling import safe_files
from hf_metaembed.modeling.pairing import PAIRINGS
from hf_metaembed.modeling.registry import REGISTRIES, block_config_fields
from hf_metaembed.testing import make_tiny_esm

SEQUENCES = ["MKTAYIAKQRGSH", "WLLE", "ACDEFGHIKLMNPQRSTVWY", "MVLSPADK"]
# complexes with 1-3 chains per side and very different lengths, so every layout pads a lot
LIGANDS = [["MKTAYIAKQR", "GSH"], ["WLLE"], ["ACDEFGHIK", "LMNPQ", "RSTVWY"]]
RECEPTORS = [["MVLSPADKTNVKAAW"], ["QQRRKK", "DE"], ["HHW"]]
TASKS = {"regression": 1, "classification": 3}
# small anchor sets for the tiny data; head counts get TINY_HEADS (see `case_settings`)
TINY_SETTINGS = {"lle_neighbors": 3, "lle_anchors": 30}
# every registered `*_num_heads` setting: 2 divides all the tiny unit sizes (12, 16, 24, 28) and is even (ConvBERT)
TINY_HEADS = 2
ATOL = 1e-5


def single_architecture() -> str:
    """The architecture that reads one plain sequence per sample."""
    return next(name for name, cls in PAIRINGS.items() if not cls.is_pair)


def pair_architecture() -> str:
    """The pair architecture a fusion or pooling is also placed in: the first registered one whose sides meet
    after being read apart (`sides`), else the first pair architecture."""
    pairs = [name for name, cls in PAIRINGS.items() if cls.is_pair]
    return next((name for name in pairs if PAIRINGS[name].layout == "sides"), pairs[0])


def contexts(field_name: str) -> list[dict]:
    """The settings (besides the block's own field) a block of the registry with config field `field_name` is placed
    in, one case each. A registry added later gets one case at the defaults."""
    both = [{"architecture": single_architecture()}, {"architecture": pair_architecture()}]
    table = {
        "fusion": both,
        "pooling": both,
        "unit_encoder": [{"architecture": name} for name in PAIRINGS],
        "head": [{"task": task} for task in TASKS],
    }
    return table.get(field_name, [{}])


@dataclass(frozen=True)
class ContractCase:
    """One registered block in one tiny model: `kind` and `name` as registered, the config `settings` it is built
    with, the `task` of its head, and, where the config already refuses the combination, that `refusal`."""

    kind: str
    name: str
    config_field: str
    settings: tuple
    task: str = "regression"
    refusal: str | None = None
    block: type = field(default=None, compare=False, hash=False)

    @property
    def config(self) -> dict:
        return dict(self.settings)

    @property
    def id(self) -> str:
        where = "-".join(str(self.config[key]) for key in ("architecture",) if key in self.config)
        return "-".join(part for part in (self.kind.replace(" ", "_"), self.name, where, self.task) if part)

    @property
    def model_key(self) -> tuple:
        """Cases with the same settings and task share one model (and one saved folder)."""
        return (self.settings, self.task)


def case_settings(registry, name: str, context: dict) -> dict:
    """The config of `name`'s case: the tiny settings the registered blocks know, the context, the block's own
    field, and what the block class asks for (`contract_settings`)."""
    known = block_config_fields()
    settings = {key: value for key, value in TINY_SETTINGS.items() if key in known}
    settings.update({key: TINY_HEADS for key in known if key.endswith("_num_heads")})
    settings.update({key: value for key, value in context.items() if key != "task"})
    settings[registry.field] = name
    settings.update(getattr(registry[name], "contract_settings", {}))
    return settings


def contract_cases(kinds: tuple[str, ...] | None = None) -> list[ContractCase]:
    """Every registered block of every registry (or of the registries whose `kind` is in `kinds`), each in the
    contexts its stage needs. A combination the config refuses becomes a case that checks the refusal."""
    cases = []
    for registry in REGISTRIES:
        if kinds is not None and registry.kind not in kinds:
            continue
        for name, block in registry.items():
            for context in contexts(registry.field):
                settings = case_settings(registry, name, context)
                try:
                    MetaEmbedConfig(**settings)
                    refusal = None
                except ValueError as error:
                    refusal = str(error)
                task = context.get("task", "regression")
                settings = tuple(sorted(settings.items()))
                cases.append(ContractCase(registry.kind, name, registry.field, settings, task, refusal, block))
    return cases


def remote_cases(cases: list[ContractCase]) -> list[ContractCase]:
    """One case per block (its first context) for the remote-code reload: the bundle's code for a block is the same
    in every context, and each reload in the remote interpreter costs a model build."""
    first = {}
    for case in cases:
        first.setdefault((case.kind, case.name), case)
    return list(first.values())


def needs_fitting(block: type) -> bool:
    """A block that must be fitted before use: it says so, has a `fit` method, or loads fitted tensors."""
    return any(
        (getattr(block, "needs_fitting", False), callable(getattr(block, "fit", None)), hasattr(block, "load_fitted"))
    )


def in_bundle(block: type) -> bool:
    """Whether the block's code travels with a saved folder (it lives in the remote-code bundle)."""
    return block.__module__.startswith("hf_metaembed.modeling.")


def outputs(model, inputs: dict) -> dict[str, torch.Tensor]:
    """Every output a case checks: logits, the pooled vector, fusion weights and the unit states (eval, no grad)."""
    with torch.no_grad():
        head = model(**inputs)
        base = model.metaembed(**inputs)
    return {
        "logits": head.logits,
        "pooled": head.pooler_output,
        "fusion_weights": head.fusion_weights,
        "unit_states": base.last_hidden_state,
    }


def pad_units(inputs: dict, extra: int, garbage: float) -> dict:
    """`inputs` with `extra` more padded unit slots, and `garbage`-scaled noise in every padded slot."""
    unit_mask = F.pad(inputs["unit_mask"], (0, extra))
    padded = (1 - unit_mask).unsqueeze(-1).to(torch.float32)
    generator = torch.Generator().manual_seed(7)
    states = []
    for state in inputs["backbone_states"]:
        state = F.pad(state, (0, 0, 0, extra))
        states.append(state + garbage * torch.randn(state.shape, generator=generator) * padded)
    return {**inputs, "unit_mask": unit_mask, "backbone_states": states}


def select_samples(inputs: dict, samples: list[int], trim: bool = False) -> tuple[dict, torch.Tensor]:
    """The batch of `samples` only, in that order (each sample's segments kept in their order); with `trim`, cut to
    the longest real unit left. Returns the inputs and the index of each kept segment in the original batch."""
    sample_index = inputs["segment_sample_index"]
    segments = torch.cat([torch.nonzero(sample_index == s).flatten() for s in samples])
    renumber = torch.empty(int(sample_index.max()) + 1, dtype=torch.long)
    renumber[torch.tensor(samples)] = torch.arange(len(samples))
    unit_mask = inputs["unit_mask"][segments]
    units = int(unit_mask.sum(dim=1).max()) if trim else unit_mask.shape[1]
    selected = {
        **inputs,
        "unit_mask": unit_mask[:, :units],
        "backbone_states": [state[segments, :units] for state in inputs["backbone_states"]],
        "segment_sample_index": renumber[sample_index[segments]],
        "segment_side_index": inputs["segment_side_index"][segments],
    }
    return selected, segments


def assert_same(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=atol, msg=lambda message: f"{what}: {message}")


class GarbageInPadding:
    """Forward pre-hooks that put large noise into the padded units of every stage's input (fusion, unit encoder,
    pairing), so a block that lets padded states leak into real outputs shows, whatever the stage before it did."""

    def __init__(self, base, scale: float = 100.0) -> None:
        self.base, self.scale, self.handles = base, scale, []

    def __enter__(self) -> "GarbageInPadding":
        generator = torch.Generator().manual_seed(11)

        def noisy(state, unit_mask):
            padded = (~unit_mask.bool()).unsqueeze(-1).to(state.dtype)
            if state.dim() == 4:  # a layer-mix backbone: (segments, units, layers, dim)
                padded = padded.unsqueeze(-1)
            return state + self.scale * torch.randn(state.shape, generator=generator).to(state.dtype) * padded

        def fusion_hook(module, args):
            states, unit_mask = args[0], args[1]
            return ([noisy(state, unit_mask) for state in states], unit_mask, *args[2:])

        def unit_hook(module, args):
            return (noisy(args[0], args[1]), *args[1:])

        self.handles.append(self.base.fusion.register_forward_pre_hook(fusion_hook))
        self.handles.append(self.base.unit_encoder.register_forward_pre_hook(unit_hook))
        self.handles.append(self.base.pairing.register_forward_pre_hook(unit_hook))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


class BlockContractTester:
    """Tiny backbones, the states they give for every layout, one model per case (built, fitted, moved off its
    initial values, cached), and the checks. `folder` is where the tiny backbones are written."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        self.backbone_paths = [
            make_tiny_esm(folder / "esm_16", seed=0),
            make_tiny_esm(folder / "esm_12", seed=1, hidden_size=12, intermediate_size=24),
        ]
        self.processor = MetaEmbedProcessor.from_backbones(self.backbone_paths)
        # every model shares these loaded (frozen) backbones; only the reading model runs them
        reader = MetaEmbedForSequenceClassification.from_backbones(
            self.backbone_paths, unit_types=["residue", "residue"], fusion="concat", num_labels=1
        ).eval()
        self.backbones = reader.metaembed.backbones
        self.reader = reader.metaembed
        self.states: dict[str, dict] = {}
        self.models: dict[tuple, torch.nn.Module] = {}

    # ------------------------------------------------------------------------------------------- inputs and models

    def inputs(self, case: ContractCase) -> dict:
        """Precomputed backbone states and the segment layout of the case's architecture (read once per layout)."""
        architecture = case.config.get("architecture", single_architecture())
        layout = PAIRINGS[architecture].layout
        if layout not in self.states:
            if PAIRINGS[architecture].is_pair:
                batch = self.processor(ligand=LIGANDS, receptor=RECEPTORS, architecture=architecture)
            else:
                batch = self.processor(SEQUENCES, architecture=architecture)
            with torch.no_grad():
                states = self.reader.reader.read_backbones(
                    self.backbones,
                    batch["input_ids"],
                    batch["attention_mask"],
                    batch["token_unit_index"],
                    batch["unit_mask"].shape[1],
                )
            segments = batch["unit_mask"].shape[0]
            self.states[layout] = {
                "backbone_states": states,
                "unit_mask": batch["unit_mask"],
                "segment_sample_index": batch.get("segment_sample_index", torch.arange(segments)),
                "segment_side_index": batch.get("segment_side_index", torch.zeros(segments, dtype=torch.long)),
            }
        return dict(self.states[layout])

    def samples(self, case: ContractCase) -> int:
        return int(self.inputs(case)["segment_sample_index"].max()) + 1

    def labels(self, case: ContractCase) -> torch.Tensor:
        count = self.samples(case)
        if case.task == "classification":
            return torch.arange(count) % TASKS["classification"]
        return torch.linspace(-1.0, 2.0, count)

    def build(self, case: ContractCase):
        """The case's model: seeded, fitted if the block needs it, every trainable weight moved off its initial
        value (so a reload that re-initialised anything, or a block that ignored its input, would show), eval mode.
        Skips (with the reason) a block that must be fitted but offers no way to fit it."""
        if case.model_key in self.models:
            return self.models[case.model_key]
        if case.refusal is not None:
            pytest.skip(f"the config refuses {case.kind} {case.name!r} here: {case.refusal}")
        torch.manual_seed(0)
        labels = TASKS[case.task]
        extra = {"problem_type": "single_label_classification"} if case.task == "classification" else {}
        model = MetaEmbedForSequenceClassification.from_backbones(
            self.backbones, unit_types=["residue", "residue"], num_labels=labels, **extra, **case.config
        )
        self.fit(case, model)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
        self.models[case.model_key] = model.eval()
        return model

    def fit(self, case: ContractCase, model) -> None:
        """Fit every selected block that must be fitted, on the real unit states of the case's inputs."""
        inputs = self.inputs(case)
        real = inputs["unit_mask"].bool()
        rows = [state[real] for state in inputs["backbone_states"]]  # per backbone (real units, d_i)
        for stage, block in model.config.blocks().items():
            if not needs_fitting(block):
                continue
            name = getattr(model.config, stage)
            if stage == "fusion" and name in fitted_fusion_names():
                fit_fusion(model, rows)
                continue
            module = getattr(model.metaembed, stage, None)
            fit = getattr(module, "fit", None)
            if callable(fit) and len(inspect.signature(fit).parameters) == 1:
                fit(rows)
                continue
            pytest.skip(
                f"{stage} {name!r} must be fitted (needs_fitting, fit or load_fitted) but hf_metaembed.fit_fusion "
                f"does not fit it and its module has no fit(rows) method: add one, or declare contract_settings "
                "that make it usable unfitted"
            )

    # ------------------------------------------------------------------------------------------------- the checks

    def check_refusal(self, case: ContractCase) -> None:
        """A combination the config refuses is refused when the model is built too, by a message naming the block."""
        assert case.name in case.refusal or case.kind in case.refusal, case.refusal
        with pytest.raises(ValueError) as error:
            MetaEmbedForSequenceClassification.from_backbones(
                self.backbones, unit_types=["residue", "residue"], num_labels=1, **case.config
            )
        assert str(error.value) == case.refusal

    def check_shapes(self, case: ContractCase) -> None:
        """Shapes of every output, all finite; padded units are zero in the unit states and the fusion weights."""
        model = self.build(case)
        inputs = self.inputs(case)
        result = outputs(model, inputs)
        segments, units = inputs["unit_mask"].shape
        base = model.metaembed
        assert result["logits"].shape == (self.samples(case), TASKS[case.task])
        assert result["pooled"].shape == (self.samples(case), base.pairing.output_dim)
        assert model.classifier(result["pooled"]).shape == result["logits"].shape
        assert result["fusion_weights"].shape == (segments, units, len(self.backbones))
        assert result["unit_states"].shape == (segments, units, base.fusion.output_dim)
        for what, tensor in result.items():
            assert torch.isfinite(tensor).all(), f"{what} holds NaN or inf"
        padded = ~inputs["unit_mask"].bool()
        assert result["unit_states"][padded].abs().max() == 0, "padded units must come out as zeros"
        assert result["fusion_weights"][padded].abs().max() == 0, "padded units must have zero fusion weights"
        assert result["pooled"].abs().max() > 1e-3, "the pooled vector is (nearly) zero: the check would prove nothing"

    def check_padding_invariance(self, case: ContractCase) -> None:
        """Extra padded unit slots, and garbage in every padded slot of every stage's input, change no output."""
        model = self.build(case)
        inputs = self.inputs(case)
        expected = outputs(model, inputs)
        units = inputs["unit_mask"].shape[1]
        for extra, garbage in ((0, 100.0), (5, 0.0), (5, 100.0)):
            result = outputs(model, pad_units(inputs, extra, garbage))
            where = f"{extra} extra padded units, garbage x{garbage}"
            for what in ("logits", "pooled"):
                assert_same(result[what], expected[what], f"{what} ({where})")
            for what in ("unit_states", "fusion_weights"):
                assert_same(result[what][:, :units], expected[what], f"{what} ({where})")
                assert torch.count_nonzero(result[what][:, units:]) == 0, f"{what} of the extra padding ({where})"
        with GarbageInPadding(model.metaembed):
            result = outputs(model, inputs)
        for what in ("logits", "pooled"):
            assert_same(result[what], expected[what], f"{what} (garbage in the padded units of every stage)")

    def check_batch_order_invariance(self, case: ContractCase) -> None:
        """Reordering the samples reorders the outputs; a sample alone (cut to its own length) gets what it got in
        the batch."""
        model = self.build(case)
        inputs = self.inputs(case)
        expected = outputs(model, inputs)
        count = self.samples(case)
        order = list(range(count))[::-1]
        order = order[1:] + order[:1]  # neither the identity nor only a reversal
        reordered, segments = select_samples(inputs, order)
        result = outputs(model, reordered)
        for what in ("logits", "pooled"):
            assert_same(result[what], expected[what][order], f"{what} (samples reordered as {order})")
        for what in ("unit_states", "fusion_weights"):
            assert_same(result[what], expected[what][segments], f"{what} (samples reordered as {order})")
        for sample in range(count):
            alone, segments = select_samples(inputs, [sample], trim=True)
            result = outputs(model, alone)
            units = alone["unit_mask"].shape[1]
            for what in ("logits", "pooled"):
                assert_same(result[what][0], expected[what][sample], f"{what} of sample {sample} alone")
            assert_same(result["unit_states"], expected["unit_states"][segments, :units], f"sample {sample} alone")

    def check_gradients(self, case: ContractCase) -> None:
        """A training step's loss is finite and its gradients reach every trainable parameter, none NaN."""
        model = copy.deepcopy(self.build(case)).train()
        output = model(**self.inputs(case), labels=self.labels(case))
        assert torch.isfinite(output.loss) and torch.isfinite(output.logits).all()
        output.loss.backward()
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        assert trainable, "nothing to train"
        assert not any(name.startswith("metaembed.backbone_") for name in trainable), "backbones must stay frozen"
        missing = [name for name, p in trainable.items() if p.grad is None]
        assert not missing, f"no gradient reached {missing}"
        broken = [name for name, p in trainable.items() if not torch.isfinite(p.grad).all()]
        assert not broken, f"NaN or inf gradients in {broken}"
        assert sum(float(p.grad.abs().sum()) for p in trainable.values()) > 0

    def check_save_load(self, case: ContractCase, folder: str) -> None:
        """`from_pretrained` of the saved folder gives bit-identical outputs and the block's settings back."""
        model = self.build(case)
        reloaded = type(model).from_pretrained(folder).eval()
        assert getattr(reloaded.config, case.config_field) == case.name
        for field_name in (*case.config, *case.block.config_fields):
            assert getattr(reloaded.config, field_name) == getattr(model.config, field_name), field_name
        inputs = self.inputs(case)
        expected = outputs(model, inputs)
        for what, tensor in outputs(reloaded, inputs).items():
            assert_same(tensor, expected[what], f"{what} after save/load", atol=0)

    def check_remote_code(self, case: ContractCase, result: dict) -> None:
        """The folder reloaded as remote code, in an interpreter without hf_metaembed, gives the same outputs; a
        block outside the bundle is named as missing there instead of loading wrongly."""
        if not in_bundle(case.block):
            assert "error" in result, "a block outside the bundle cannot load where hf_metaembed is missing"
            assert f"unknown {case.kind} {case.name!r}" in result["error"], result["error"][-2000:]
            return
        assert "error" not in result, result.get("error", "")[-3000:]
        assert result["module"].startswith("transformers_modules.metaembed."), result["module"]
        expected = outputs(self.build(case), self.inputs(case))
        for what, tensor in expected.items():
            assert_same(result[what], tensor, f"{what} reloaded as remote code", atol=0)


REMOTE_SCRIPT = """
import json
import threading
import traceback

import torch
from transformers import AutoModelForSequenceClassification

jobs, out = json.loads(sys.argv[1]), sys.argv[2]
results = {}
for key, (folder, inputs_file) in jobs.items():
    try:
        inputs = torch.load(inputs_file)
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            head = model(**inputs)
            base = model.metaembed(**inputs)
        results[key] = {
            "module": type(model).__module__,
            "logits": head.logits,
            "pooled": head.pooler_output,
            "fusion_weights": head.fusion_weights,
            "unit_states": base.last_hidden_state,
        }
    except Exception:
        results[key] = {"error": traceback.format_exc()}
torch.save(results, out)
"""


@contextmanager
def no_fsync():
    """Crash-safe saving flushes every file to disk; test folders need no durability, and 60 saves of 40 files
    would spend most of their time there."""
    with mock.patch.object(safe_files, "_fsync_tree"), mock.patch.object(safe_files, "_fsync_folder"):
        yield


class RemoteRun:
    """Every case's model saved once (backbone weights included), then the folders of `remote_cases` (one case per
    block) reloaded through `AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` in
    ONE interpreter that cannot import hf_metaembed (`run_without_the_library`), started in a background thread at
    once; `result` waits for it."""

    def __init__(
        self, tester: BlockContractTester, cases: list[ContractCase], remote_cases: list[ContractCase], folder: Path
    ) -> None:
        self.tester, self.folder = tester, Path(folder)
        self.folders: dict[tuple, str] = {}
        self.keys: dict[tuple, str] = {}
        self.not_built: dict[tuple, tuple[str, str]] = {}  # model key -> ("skip" | "error", why)
        self.jobs: dict[str, tuple[str, str]] = {}
        remote = {case.model_key for case in remote_cases}
        for case in cases:
            if case.refusal is not None or case.model_key in self.keys or case.model_key in self.not_built:
                continue
            try:
                model = tester.build(case)
            except pytest.skip.Exception as skip:
                self.not_built[case.model_key] = ("skip", str(skip))
                continue
            except Exception:
                self.not_built[case.model_key] = ("error", traceback.format_exc())
                continue
            key = f"case_{len(self.keys):03d}"
            # one folder name for all: transformers names the remote module after it and the code's hash, so the
            # bundle (the same files in every folder) is imported once, not once per folder
            folder_path = self.folder / key / "metaembed"
            with no_fsync():
                model.save_pretrained(folder_path)
            self.keys[case.model_key], self.folders[case.model_key] = key, str(folder_path)
            if case.model_key in remote:
                inputs_file = self.folder / f"{key}_inputs.pt"
                torch.save(tester.inputs(case), inputs_file)
                self.jobs[key] = (str(folder_path), str(inputs_file))
        self._results: dict | None = None
        self._run: list = []
        # the interpreter runs while this process goes on with the local checks (it only waits on a child here)
        self._thread = threading.Thread(target=self._reload_remotely, daemon=True)
        self._thread.start()

    def _reload_remotely(self) -> None:
        out = self.folder / "remote_outputs.pt"
        try:
            self._run.append(run_without_the_library(REMOTE_SCRIPT, [json.dumps(self.jobs), out], self.folder))
        except Exception:  # e.g. the timeout: reported by `result`
            self._run.append(traceback.format_exc())

    def folder_of(self, case: ContractCase) -> str:
        """The case's saved folder (skips or fails as building its model did)."""
        if case.model_key in self.not_built:
            outcome, why = self.not_built[case.model_key]
            if outcome == "skip":
                pytest.skip(why)
            pytest.fail(f"building the model of {case.id} failed:\n{why}")
        return self.folders[case.model_key]

    def result(self, case: ContractCase) -> dict:
        """The remote run's outputs (or its error) for the case's folder; waits for the run the first time."""
        self.folder_of(case)
        if self._results is None:
            self._thread.join()
            run = self._run[0]
            assert not isinstance(run, str), f"the remote-code interpreter did not finish:\n{run}"
            assert run.returncode == 0, f"the remote-code interpreter failed:\n{run.stderr[-3000:]}"
            self._results = torch.load(self.folder / "remote_outputs.pt")
        return self._results[self.keys[case.model_key]]


class BlockContractMixin:
    """The contract as test methods. A test class mixes it in and is parametrised with `case` (a `ContractCase`,
    from `contract_cases()`); it needs the fixtures `contract` (a `BlockContractTester`) and `remote_run` (a
    `RemoteRun` holding the saved folders)."""

    def test_shapes(self, case, contract):
        if case.refusal is not None:
            contract.check_refusal(case)
            return
        contract.check_shapes(case)

    def test_padding_invariance(self, case, contract):
        contract.check_padding_invariance(case)

    def test_batch_order_invariance(self, case, contract):
        contract.check_batch_order_invariance(case)

    def test_gradients(self, case, contract):
        contract.check_gradients(case)

    def test_save_load(self, case, contract, remote_run):
        contract.build(case)
        contract.check_save_load(case, remote_run.folder_of(case))


class RemoteCodeContractMixin:
    """The remote-code reload as a test method, parametrised with `case` over `remote_cases(contract_cases())`;
    every case reads its result from the one shared run of `remote_run`."""

    def test_remote_code(self, case, contract, remote_run):
        contract.build(case)
        contract.check_remote_code(case, remote_run.result(case))
