"""Export a saved MetaEmbed model, the whole fused graph (every backbone, alignment, fusion, unit encoder, pairing and
pooling, head), as one ONNX model with dynamic batch and length axes, and check it with onnxruntime.

```python
from hf_metaembed.export import export_onnx

report = export_onnx("my-model", "my-model-onnx", quantize="int8")
report["max_abs_diff"]  # onnxruntime against torch on the processor's own batch
```

The model's reading stage cuts every backbone's tokens to the batch's longest (a Python `int` read from the data),
which a traced graph would freeze at the length of the example batch. `ExportableMetaEmbed` runs the reader's own
per-backbone step (`reader.read_backbone`) over the whole padded width instead (padding is masked, so the states of
real tokens are the same), then the model's own stages unchanged (`reader.finish`, fusion, unit encoder, pairing,
head); traced, ConvBERT reads the whole padded batch at once instead of grouping segments by length in Python. The
pair architectures take the processor's pair batch (`segment_sample_index`, `segment_side_index`): their sample,
chain and length counts are read from tensors (`segments.size_of`, `count_values`), so they stay dynamic. Three ATen
operators whose stock ONNX conversion freezes a size or is missing are converted here while exporting (`unfold`,
`unflatten` inside `nn.MultiheadAttention`, `rms_norm`). A block whose graph cannot be traced, or whose traced graph
does not follow a batch of another shape, is reported by name (`OnnxExportError`).

Not model code: the saved model's files never import this module.
"""

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..modeling.windowing import backbone_window
from .onnx_symbolics import export_symbolics

ONNX_FILE = "model.onnx"
QUANTIZED_FILE = "model.int8.onnx"
REPORT_FILE = "onnx_export.json"
DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-4
QUANTIZATIONS = ("int8",)
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_unit_index", "unit_mask")
PAIR_INPUTS = ("segment_sample_index", "segment_side_index")
EXPORT_EXTRA_HINT = "pip install 'hf_metaembed[export]'"

# example inputs the graph is traced with and checked on: several lengths so every backbone pads
PROTEIN_EXAMPLES = ("MKTAYIAKQRQISFVKSHFSRQ", "GSHMVLSPADKTNVKAAW", "MVLSPA")
TEXT_EXAMPLES = ("the movie was surprisingly good", "a dull film", "not bad at all for a sequel")
PROTEIN_CHECK = ("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGD", "MKT", "GSHMVLSPAD", "AW")
TEXT_CHECK = ("one more sentence that is longer than every example above", "ok", "fine film", "bad")


class OnnxExportError(RuntimeError):
    """A model (or one of its blocks) that cannot be exported to ONNX, or whose export disagrees with torch."""


def _block_names(model: nn.Module) -> dict[str, str]:
    """Which configured block each stage of `model` is, as the messages name it."""
    config = model.config
    names = {
        "reading": f"backbone reading (level {config.level!r})",
        "reader": f"backbone reading (level {config.level!r})",
        "fusion": f"fusion {config.fusion!r}",
        "unit_encoder": f"unit encoder {config.unit_encoder!r}",
        "pairing": f"architecture {config.architecture!r} (pooling {config.pooling!r})",
    }
    if hasattr(model, "classifier"):
        names["head"] = f"head {config.head!r}"
    return names


class ExportableMetaEmbed(nn.Module):
    """A MetaEmbed model (`MetaEmbedModel` or a `MetaEmbedFor*` model) as one traceable module.

    Inputs are the processor's tensors (`(segments, backbones, tokens)` ids, mask and unit index; `(segments, units)`
    unit mask; `(segments,)` segment sample and side indices for pair architectures). Outputs, in `output_names`
    order: `embedding (samples, dim)`, `unit_states (segments, units, dim)` (at unit level), `fusion_weights
    (segments, units, backbones)` (`(segments, backbones)` at sequence level) and, for a model with a head,
    `logits` (`(samples, labels)`, or `(segments, units, labels)` for token classification).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        base = model.base_model if hasattr(model, "classifier") else model
        config = base.config
        if any(backbone_window(config, index) is not None for index in range(config.num_backbones)):
            raise OnnxExportError(
                f"backbone windowing (window_size={config.window_size!r}) cannot be exported: the number of windows "
                "depends on each sequence's length; export a model saved without window_size, and cut long inputs "
                "with the processor's truncation=True"
            )
        self.model = model
        self.base = base
        self.token_classifier = hasattr(model, "classifier") and type(model).__name__.endswith("TokenClassification")
        self.stage = "reading"  # the stage being traced, for errors that name the block
        self.output_names = ["embedding", "fusion_weights"]
        if config.level == "unit":
            self.output_names.insert(1, "unit_states")
        if hasattr(model, "classifier"):
            self.output_names.append("logits")

    @property
    def pair(self) -> bool:
        return self.base.pairing.is_pair

    @property
    def input_names(self) -> list[str]:
        return list(TOKEN_INPUTS) + (list(PAIR_INPUTS) if self.pair else [])

    def read_backbones(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_unit_index: torch.Tensor, num_units
    ) -> list[torch.Tensor]:
        """`BackboneReader.read_backbones` without cutting each backbone's tokens to the batch's longest (a length
        read from the data, which a trace would freeze): per backbone `(segments, units, d_i)` (`(segments, 1, d_i)`
        per sequence), from the reader's own per-backbone step (`read_backbone`) over the whole padded width."""
        read = self.base.reader.read_backbone
        return [
            read(index, backbone, input_ids[:, index], attention_mask[:, index], token_unit_index[:, index], num_units)
            for index, backbone in enumerate(self.base.backbones)
        ]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_unit_index: torch.Tensor,
        unit_mask: torch.Tensor,
        segment_sample_index: torch.Tensor | None = None,
        segment_side_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        base = self.base
        self.stage = "reading"
        token_unit_index, unit_mask = base.reader.unit_layout(token_unit_index, attention_mask, unit_mask)
        states = self.read_backbones(input_ids, attention_mask, token_unit_index, unit_mask.shape[1])
        reading = base.reader.finish(states, unit_mask)
        self.stage = "fusion"
        fused, fusion_weights = base.fusion(reading.states, reading.unit_mask)  # (segments, units, dim), (.., n)
        self.stage = "unit_encoder"
        unit_states = base.unit_encoder(fused, reading.unit_mask, segment_sample_index, segment_side_index)
        self.stage = "pairing"
        pooled = base.pairing(unit_states, reading.unit_mask, segment_sample_index, segment_side_index)
        if reading.per_sequence:
            fusion_weights = fusion_weights.squeeze(1)
        outputs = {"embedding": pooled, "unit_states": unit_states, "fusion_weights": fusion_weights}
        if hasattr(self.model, "classifier"):
            self.stage = "head"
            outputs["logits"] = self.model.classifier(unit_states if self.token_classifier else pooled)
        return tuple(outputs[name] for name in self.output_names)


def _dynamic_axes(module: ExportableMetaEmbed) -> dict[str, dict[int, str]]:
    axes = {name: {0: "segments", 2: "tokens"} for name in TOKEN_INPUTS[:3]}
    axes["unit_mask"] = {0: "segments", 1: "units"}
    for name in PAIR_INPUTS:
        axes[name] = {0: "segments"}
    axes["embedding"] = {0: "samples"}
    axes["unit_states"] = {0: "segments", 1: "units"}
    level_unit = module.base.config.level == "unit"
    axes["fusion_weights"] = {0: "segments", 1: "units"} if level_unit else {0: "segments"}
    axes["logits"] = {0: "segments", 1: "units"} if module.token_classifier else {0: "samples"}
    return {name: axes[name] for name in module.input_names + module.output_names}


def example_inputs(processor, architecture: str, check: bool = False) -> dict[str, torch.Tensor]:
    """A processor batch to trace the graph with (`check=False`) or to check it on (`check=True`, another batch
    size and longer inputs, so a length or batch size frozen into the graph shows)."""
    protein = "residue" in processor.unit_types
    texts = (PROTEIN_CHECK if check else PROTEIN_EXAMPLES) if protein else (TEXT_CHECK if check else TEXT_EXAMPLES)
    if architecture == "single":
        return dict(processor(list(texts), return_tensors="pt", truncation=True))
    # pair architectures: complexes of one or two chains per side; the check batch has more samples and a side of
    # three chains, so a sample or chain count frozen into the graph shows
    ligand = [[texts[0], texts[2]], [texts[1]]] + ([[texts[3]], [texts[1], texts[3], texts[2]]] if check else [])
    receptor = [[texts[1]], [texts[2], texts[0]]] + ([[texts[0]], [texts[2]]] if check else [])
    return dict(processor(ligand=ligand, receptor=receptor, return_tensors="pt", truncation=True))


def _torch_outputs(module: ExportableMetaEmbed, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """The model's own forward (not the export wrapper) on `batch`, in the wrapper's output order."""
    with torch.no_grad():
        outputs = module.model(**batch)
    values = {
        "embedding": outputs.pooler_output,
        "unit_states": getattr(outputs, "last_hidden_state", None),
        "fusion_weights": outputs.fusion_weights,
        "logits": getattr(outputs, "logits", None),
    }
    if hasattr(module.model, "classifier"):  # the classifiers' outputs hold the base model's pooled vector only
        with torch.no_grad():
            base_outputs = module.base(**batch)
        values["embedding"], values["unit_states"] = base_outputs.pooler_output, base_outputs.last_hidden_state
    return [values[name].float().numpy() for name in module.output_names]


def compare(
    session, module: ExportableMetaEmbed, batch: dict[str, torch.Tensor], atol: float, blocks: dict[str, str]
) -> float:
    """The largest absolute difference between onnxruntime's outputs and torch's on `batch`; an output past `atol`
    (or of another shape) is an `OnnxExportError` naming the block that makes it."""
    feeds = {name: batch[name].numpy() for name in module.input_names}
    try:
        produced = session.run(module.output_names, feeds)
    except Exception as error:  # onnxruntime fails inside a node: the node's name starts with its module's path
        detail = " ".join(str(error).split())[:300]
        node = re.search(r"Name:'/?([A-Za-z_]\w*)", str(error))
        block = _block_of_attribute(node.group(1), module, blocks) if node else None
        raise OnnxExportError(
            f"{block or 'the exported graph'} froze a size of the example batch into the graph: onnxruntime fails "
            f"on a batch of shape {tuple(batch['input_ids'].shape)} ({detail}); choose another block for this model, "
            "or serve it with `hf-metaembed serve` instead"
        ) from error
    expected = _torch_outputs(module, batch)
    makers = {"embedding": "pairing", "unit_states": "pairing", "fusion_weights": "fusion", "logits": "head"}
    worst = 0.0
    for name, got, want in zip(module.output_names, produced, expected):
        if got.shape != want.shape:
            raise OnnxExportError(
                f"the exported {blocks[makers[name]]} gives {name} of shape {got.shape} where torch gives "
                f"{want.shape} for a batch of shape {tuple(batch['input_ids'].shape)}: this block froze a size of "
                "the example batch into the graph and cannot be exported as it is"
            )
        diff = float(np.abs(got - want).max()) if got.size else 0.0
        if not diff <= atol:
            raise OnnxExportError(
                f"the exported graph's {name} differs from torch by {diff:.3g} (> {atol:g}) on a batch of shape "
                f"{tuple(batch['input_ids'].shape)}: {blocks['reading'] if name != 'logits' else blocks['head']} "
                f"or {blocks[makers[name]]} does not trace faithfully"
            )
        worst = max(worst, diff)
    return worst


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence file descriptors 1 and 2 for the block: the legacy exporter logs its whole TorchScript graph (from
    C++) when a block fails, and shape-inference notices; the failure itself is raised as an `OnnxExportError`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            for descriptor, original in zip((1, 2), saved):
                os.dup2(original, descriptor)
                os.close(original)


def _failing_block(error: BaseException, module: "ExportableMetaEmbed", blocks: dict[str, str]) -> str:
    """The block an exporter error comes from: the innermost model block in the scope of the graph value it names
    (errors raised while converting the graph), else the stage being traced when it was raised."""
    text = str(error)
    cause = text.find("Caused by the value")
    scope = re.search(r"scope: (\S+)", text[cause:]) if cause >= 0 else None
    if scope:
        for part in reversed(scope.group(1).split("/")):
            block = _block_of_attribute(part.rsplit("::", 1)[-1], module, blocks)
            if block:
                return block
    return blocks[module.stage]


def _block_of_attribute(attribute: str, module: "ExportableMetaEmbed", blocks: dict[str, str]) -> str | None:
    """The block a model attribute (`backbone_0`, `fusion`, `unit_encoder`, `pairing`, `classifier`, ...) is."""
    backbone = re.fullmatch(r"backbone_(\d+)", attribute)
    if backbone:
        index = int(backbone.group(1))
        return f"backbone {index} ({module.base.config.backbone_names[index]})"
    stage = {"classifier": "head", "layer_mixes": "reading", "token_poolers": "reading"}.get(attribute, attribute)
    return blocks.get(stage)


def _trace(module: ExportableMetaEmbed, batch: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    blocks = _block_names(module.model)
    arguments = tuple(batch[name] for name in module.input_names)
    try:
        with warnings.catch_warnings(), _native_stderr_silenced(), export_symbolics(opset):
            # the legacy exporter's deprecation notice and tracer warnings about shape arithmetic; a block that
            # really froze a size is caught by the check on a batch of another shape
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                arguments,
                str(path),
                input_names=module.input_names,
                output_names=module.output_names,
                dynamic_axes=_dynamic_axes(module),
                opset_version=opset,
                dynamo=False,
            )
    except OnnxExportError:
        raise
    except Exception as error:
        detail = " ".join(str(error).split())[:300]
        raise OnnxExportError(
            f"{_failing_block(error, module, blocks)} cannot be exported to ONNX ({type(error).__name__}: {detail}); "
            "choose another block for this model, or serve it with `hf-metaembed serve` instead"
        ) from error


def _external_data(path: Path) -> bool:
    """Whether the exported graph keeps its weights in files beside it (models past protobuf's 2 GB)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in graph.initializer)


def _check_onnx_packages() -> None:
    for package in ("onnx", "onnxruntime"):
        try:
            __import__(package)
        except ImportError:
            raise ImportError(f"ONNX export needs the package {package!r}: {EXPORT_EXTRA_HINT}") from None


def load_for_export(folder: str | os.PathLike):
    """`(model, processor)` of a saved MetaEmbed folder, the model built as the class it was saved as, in float32 eval
    mode on the CPU."""
    from ..modeling.processing_metaembed import MetaEmbedProcessor
    from ..serve.engine import saved_model_class

    model = saved_model_class(folder).from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, MetaEmbedProcessor.from_pretrained(str(folder))


def export_onnx(
    model_folder: str | os.PathLike,
    output: str | os.PathLike,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_ATOL,
    examples: Sequence[str] | None = None,
) -> dict:
    """Export the saved model in `model_folder` to `output/model.onnx` (and, with `quantize="int8"`, the dynamically
    quantised `output/model.int8.onnx`), with the processor files beside it, and check it with onnxruntime.

    Args:
        model_folder: a folder written by `save_pretrained` (model and processor).
        output: the folder to write (created).
        quantize: None, or `"int8"` (onnxruntime's dynamic quantisation of the weights of matrix products).
        opset: the ONNX opset.
        atol: the largest absolute difference from torch accepted for the float32 graph.
        examples: sequences to trace with (default: a few built-in ones of the backbones' kind); pair
            architectures always trace with built-in complexes.

    Returns:
        The report written to `output/onnx_export.json`: inputs, outputs, the largest difference from torch on the
        example batch and on a batch of another shape (`max_abs_diff`), and `int8_max_abs_diff` when quantised.

    Raises:
        OnnxExportError: a block that cannot be traced, or an export that differs from torch by more than `atol`.
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZATIONS)}")
    _check_onnx_packages()
    model, processor = load_for_export(model_folder)
    module = ExportableMetaEmbed(model).eval()
    architecture = model.config.architecture
    if examples and module.pair:
        raise ValueError(
            f"examples are plain sequences, but architecture {architecture!r} reads ligand/receptor complexes: leave "
            "them out (--example) to trace with the built-in complexes"
        )
    if examples:
        batch = dict(processor(list(examples), return_tensors="pt", truncation=True))
    else:
        batch = example_inputs(processor, architecture)
    check_batch = example_inputs(processor, architecture, check=True)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / ONNX_FILE
    _trace(module, batch, path, opset)
    blocks = _block_names(model)
    session = _session(path)
    differences = [compare(session, module, batch, atol, blocks), compare(session, module, check_batch, atol, blocks)]
    processor.save_pretrained(str(output))
    report = {
        "onnx_file": ONNX_FILE,
        "opset": opset,
        "inputs": module.input_names,
        "outputs": module.output_names,
        "architecture": architecture,
        "level": model.config.level,
        "max_abs_diff": max(differences),
        "atol": atol,
    }
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = output / QUANTIZED_FILE
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime's advice to pre-process first, logged on the root logger
        try:
            quantize_dynamic(
                str(path), str(quantized), weight_type=QuantType.QInt8, use_external_data_format=_external_data(path)
            )
        finally:
            root.setLevel(level)
        produced = _session(quantized).run(
            module.output_names, {name: check_batch[name].numpy() for name in module.input_names}
        )
        expected = _torch_outputs(module, check_batch)
        report["int8_file"] = QUANTIZED_FILE
        report["int8_max_abs_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(produced, expected))
    (output / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


__all__ = [
    "DEFAULT_ATOL",
    "ONNX_FILE",
    "QUANTIZED_FILE",
    "ExportableMetaEmbed",
    "OnnxExportError",
    "example_inputs",
    "export_onnx",
    "load_for_export",
]
