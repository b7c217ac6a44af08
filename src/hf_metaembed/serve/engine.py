"""The model side of the server: load a saved MetaEmbed model and its processor once, turn request inputs into
processor rows (an input the backbones cannot read is an error naming it), and run batches of rows.

One `Engine` per worker process; `run_batch` is called from one thread at a time (the batcher's), so the model is
never entered concurrently. No FastAPI here.
"""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..batching import feature_rows, move_to_device
from ..modeling.feature_rows import sample_segments
from ..modeling.segments import SIDE_NAMES as SIDES
from .settings import ServeSettings

_SAMPLE_PREFIX = re.compile(r"^sample \d+(?: \(([a-z ]+)\))?: ")


class InputRejected(ValueError):
    """An input the server cannot read (answered 400); the message names the input by its position."""

    def __init__(self, message: str, param: str = "input") -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Job:
    """One input of a request as the batcher carries it: its processor row and what the request wants back."""

    row: Mapping
    unit_embeddings: bool = False
    fusion_weights: bool = False
    logits: bool = False


def saved_model_class(folder: str | Path):
    """The MetaEmbed class a folder was saved from (its config's `architectures`), `MetaEmbedModel` otherwise."""
    from ..modeling.modeling_metaembed import (
        MetaEmbedForSequenceClassification,
        MetaEmbedForTokenClassification,
        MetaEmbedModel,
    )

    classes = {cls.__name__: cls for cls in (MetaEmbedForSequenceClassification, MetaEmbedForTokenClassification)}
    names = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    return next((classes[name] for name in names if name in classes), MetaEmbedModel)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class Engine:
    """A loaded model and processor, and the two steps a request needs: `encode` (inputs -> rows) and `run_batch`
    (rows -> per-input results)."""

    def __init__(self, settings: ServeSettings) -> None:
        from ..cli.loading import torch_device
        from ..modeling.processing_metaembed import MetaEmbedProcessor

        self.settings = settings
        self.device = torch_device(settings.device)
        self.dtype = getattr(torch, settings.dtype)
        model = saved_model_class(settings.model).from_pretrained(settings.model, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.base = model.base_model
        self.processor = MetaEmbedProcessor.from_pretrained(settings.model)
        self.architecture = self.base.config.architecture
        self.pair = self.base.pairing.is_pair
        self.dim = self.base.pairing.output_dim
        self.has_head = hasattr(model, "classifier") and type(model).__name__ == "MetaEmbedForSequenceClassification"

    # ------------------------------------------------------------------------------------------ inputs -> rows

    def check_sequence(self, text: Any, where: str) -> str:
        """`text` after checking it is a non-empty string within `--max-input-length` characters."""
        if not isinstance(text, str):
            raise InputRejected(f"{where} is {type(text).__name__} ({json.dumps(text)[:60]}); send a string")
        if not text.strip():
            raise InputRejected(f"{where} is empty; send a non-empty sequence")
        limit = self.settings.max_input_length
        if len(text) > limit:
            raise InputRejected(
                f"{where} has {len(text)} characters; this server accepts at most {limit} (--max-input-length): "
                "split the sequence or raise the limit"
            )
        return text

    def check_inputs(self, inputs: Sequence) -> list:
        """Each input checked for its type and length: strings for `single` models, `{"ligand": [chains],
        "receptor": [chains]}` for pair models."""
        checked = []
        for index, item in enumerate(inputs):
            where = f"input {index}"
            if not self.pair:
                checked.append(self.check_sequence(item, where))
                continue
            if not isinstance(item, Mapping) or set(item) != set(SIDES):
                raise InputRejected(
                    f"{where}: this model pairs complexes (architecture {self.architecture!r}); send "
                    f'{{"ligand": [chain, ...], "receptor": [chain, ...]}}, got {json.dumps(item)[:80]}'
                )
            sides = {}
            for side in SIDES:
                chains = item[side]
                if isinstance(chains, str):
                    chains = [chains]
                if not isinstance(chains, list) or not chains:
                    raise InputRejected(f"{where}: {side} must be a non-empty list of chains (strings)")
                sides[side] = [self.check_sequence(c, f"{where} {side} chain {i}") for i, c in enumerate(chains)]
            checked.append(sides)
        return checked

    def _encode(self, inputs: list) -> list[Mapping]:
        truncation = self.settings.truncation or None
        if self.pair:
            encoded = self.processor(
                ligand=[item["ligand"] for item in inputs],
                receptor=[item["receptor"] for item in inputs],
                return_tensors=None,
                truncation=truncation,
            )
        else:
            encoded = self.processor(inputs, return_tensors=None, truncation=truncation)
        return feature_rows(encoded)

    def encode(self, inputs: Sequence) -> list[Mapping]:
        """Processor rows of checked inputs; an input the processor refuses (a character no backbone reads, a
        sequence past a backbone's limit) is an `InputRejected` naming its position."""
        inputs = self.check_inputs(inputs)
        try:
            return self._encode(inputs)
        except (ValueError, TypeError) as batch_error:
            for index, item in enumerate(inputs):
                try:
                    self._encode([item])
                except (ValueError, TypeError) as error:
                    message = _one_line(error)
                    match = _SAMPLE_PREFIX.match(message)
                    side = f" ({match.group(1)})" if match and match.group(1) else ""
                    message = message[match.end() :] if match else message
                    raise InputRejected(f"input {index}{side}: {message}") from error
            raise InputRejected(_one_line(batch_error)) from batch_error

    @staticmethod
    def token_count(row: Mapping) -> int:
        """Tokens of one input for `usage`: per segment the most any backbone reads, summed over segments."""
        return sum(max(len(ids) for ids in segment["input_ids"]) for segment in sample_segments(row, 0))

    # ------------------------------------------------------------------------------------------ rows -> results

    @torch.inference_mode()
    def run_batch(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """Run one batch; per job `{"embedding": (dim,) float32 tensor}` plus, when the job asked, `unit_embeddings`
        and `fusion_weights` per segment (`[{"side", "unit_embeddings" (units, dim), "fusion_weights" (units,
        backbones)}]`) and `logits (labels,)`."""
        batch = self.processor.pad([job.row for job in jobs], architecture=self.architecture)
        batch = move_to_device(dict(batch), self.device)
        outputs = self.base(**batch)
        pooled = outputs.pooler_output.float().cpu()  # (samples, dim)
        logits = None
        if self.has_head and any(job.logits for job in jobs):
            logits = self.model.classifier(outputs.pooler_output).float().cpu()
        results = [{"embedding": pooled[index]} for index in range(len(jobs))]
        if any(job.unit_embeddings or job.fusion_weights for job in jobs):
            self._add_segments(jobs, batch, outputs, results)
        for index, job in enumerate(jobs):
            if job.logits and logits is not None:
                results[index]["logits"] = logits[index]
        return results

    def _add_segments(self, jobs: list[Job], batch: Mapping, outputs, results: list[dict]) -> None:
        units = outputs.unit_mask.sum(dim=1).tolist()
        weights = outputs.fusion_weights.float().cpu()
        states = outputs.last_hidden_state.float().cpu() if outputs.last_hidden_state is not None else None
        sample_index = batch.get("segment_sample_index")
        side_index = batch.get("segment_side_index")
        segment_samples = range(len(jobs)) if sample_index is None else sample_index.tolist()
        sides = [0] * len(segment_samples) if side_index is None else side_index.tolist()
        unit_level = self.base.config.level == "unit"
        for segment, (sample, side) in enumerate(zip(segment_samples, sides)):
            job = jobs[sample]
            if not (job.unit_embeddings or job.fusion_weights):
                continue
            entry: dict[str, Any] = {"side": SIDES[int(side)]}
            count = int(units[segment])
            if job.fusion_weights:
                entry["fusion_weights"] = weights[segment, :count] if unit_level else weights[segment]
            if job.unit_embeddings and unit_level and states is not None:
                entry["unit_embeddings"] = states[segment, :count]
            results[sample].setdefault("segments", []).append(entry)

    def predictions(self, logits: torch.Tensor, top_k: int | None) -> list[dict]:
        """Labels and scores of one input's logits exactly as `pipeline("text-classification")` gives them
        (softmax over several labels, sigmoid for one label or multi-label, the raw value for regression)."""
        from transformers.pipelines.text_classification import TextClassificationPipeline

        pipeline_view = SimpleNamespace(model=self.model)
        return TextClassificationPipeline.postprocess(
            pipeline_view, {"logits": logits.unsqueeze(0)}, top_k=top_k, _legacy=False
        )


__all__ = ["Engine", "InputRejected", "Job", "saved_model_class"]
