"""The pipelines every saved MetaEmbed model carries: raw sequences in, fused embeddings (or class scores) out.

`save_pretrained` copies this file next to the model and registers its pipelines in `config.json`
(`custom_pipelines`), so on any machine, with or without `hf_metaembed` installed:

```python
from transformers import pipeline

extractor = pipeline("feature-extraction", model="path/or/hub-id", trust_remote_code=True)
extractor("MKTAYIAKQRQISFVKSHFSRQ")            # (1, units, dim) nested lists: fused residue (or word) states
torch.tensor(extractor("MKTAYIAKQRQISFVKSHFSRQ"))  # as for any transformers feature extractor
extractor(["MKTAY", "GSHMLV"], batch_size=8)   # one (1, units, dim) per input, padding removed, in input order
extractor("MKTAY", return_tensors=True)        # a (1, units, dim) tensor
extractor("MKTAY", pooled=True)                # (1, dim): the model's pooled vector (its sentence embedding)
extractor("MKTAY", return_fusion_weights=True)
# {"features": (1, units, dim), "fusion_weights": (1, units, backbones), "units": ["M", "K", "T", "A", "Y"]}

classifier = pipeline("text-classification", model="path/to/a/classifier", trust_remote_code=True)
classifier("the movie was surprisingly good")  # [{"label": ..., "score": ...}], as for any text classifier
```

As transformers' own feature extraction, the result for one input is what the model returns for a batch of that one
input: the leading 1 is the batch; the unit axis holds only the input's own units, whatever `batch_size` (transformers
keeps the batch's padding there). At `level="sequence"` each segment is one unit (its fused sequence vector) and its
fusion weights are one weight per backbone. Pair architectures take `{"ligand": [chains], "receptor": [chains]}` per
input and give one row per segment instead of the leading 1 (`(segments, units, dim)`, as lists of each segment's
rows, or with `return_tensors=True` a list of `(units, dim)` tensors when the segments differ in length);
`return_fusion_weights=True` then names each segment's side (`"sides"`). Both pipelines read the processor saved in
the same folder (`processor.save_pretrained(folder)`), or the one passed as `processor=`.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its siblings.
"""

from collections.abc import Mapping, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator
from transformers.pipelines.text_classification import TextClassificationPipeline

from .feature_rows import feature_rows
from .length_batching import DEFAULT_MAX_TOKENS, check_autocast, move_to_device, run_in_input_order
from .length_batching import autocast as precision
from .processing_metaembed import PROCESSOR_CONFIG_NAME, MetaEmbedProcessor
from .segments import SIDE_NAMES as SIDES


def _concat_features(items: list[dict]) -> dict:
    """Collate preprocessed inputs: padding happens in `_forward` with the processor, which knows the layout."""
    return {"features": [feature for item in items for feature in item["features"]]}


def _one_sample(outputs: dict, row: int) -> dict:
    """Sample `row` of a batch's outputs, as the pipeline's own unbatching hands it to `postprocess`."""
    return {key: value[row] if isinstance(value, list) else value[row : row + 1] for key, value in outputs.items()}


class MetaEmbedPipelineMixin:
    """What both pipelines share: the processor (from the model's folder unless given), reading one input (a sequence
    or a complex) into processor rows, and batching those rows with the processor's own padding."""

    _load_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def __call__(self, inputs, *args, **kwargs):
        """The pipeline's call; an empty list (or tuple) of inputs gives an empty list of results, where transformers'
        own pipelines fail with an IndexError deep inside."""
        if isinstance(inputs, list | tuple) and len(inputs) == 0:
            return []
        return super().__call__(inputs, *args, **kwargs)

    def _processor_for(self, model, processor: MetaEmbedProcessor | None) -> MetaEmbedProcessor:
        if processor is None:
            source = getattr(model, "name_or_path", None)
            if not source:
                raise ValueError(
                    "this model was not loaded from a folder or the Hub, so its processor cannot be found: pass "
                    "processor=MetaEmbedProcessor.from_backbones(...) (or the saved processor)"
                )
            try:
                processor = MetaEmbedProcessor.from_pretrained(source)
            except OSError as error:
                raise OSError(
                    f"{source} holds no MetaEmbed processor ({PROCESSOR_CONFIG_NAME}): save it beside the model with "
                    f"processor.save_pretrained({str(source)!r}), or pass processor= to the pipeline ({error})"
                ) from error
        if not hasattr(processor, "pad") or not hasattr(processor, "unit_types"):
            raise TypeError(f"processor must be a MetaEmbedProcessor, got {type(processor).__name__}")
        return processor

    @property
    def architecture(self) -> str:
        return self.model.config.architecture

    def _features(self, inputs: str | Mapping, truncation: bool | None) -> list[dict]:
        """One input (a sequence, or `{"ligand": [...], "receptor": [...]}`) as a list of one processor row."""
        if self.architecture == "single":
            if not isinstance(inputs, str):
                raise TypeError(
                    f"architecture 'single' reads plain sequences; got {type(inputs).__name__} ({inputs!r:.60})"
                )
            rows = feature_rows(self.processor([inputs], return_tensors=None, truncation=truncation))
            rows[0]["units"] = self._units(inputs)
            return rows
        if not isinstance(inputs, Mapping) or set(inputs) != set(SIDES):
            raise TypeError(
                f"architecture {self.architecture!r} reads complexes: pass {{'ligand': [chain, ...], 'receptor': "
                f"[chain, ...]}} per input; got {inputs!r:.80}"
            )
        encoded = self.processor(
            ligand=[list(inputs["ligand"])],
            receptor=[list(inputs["receptor"])],
            return_tensors=None,
            truncation=truncation,
        )
        return feature_rows(encoded)

    def _units(self, sequence: str) -> list[str]:
        """The units of a sequence as the processor reads them (residues, or whitespace-separated words)."""
        if "residue" in self.processor.unit_types:
            return list("".join(sequence.split()).upper())
        return sequence.split()

    def _batch(self, features: list[dict]) -> dict[str, torch.Tensor]:
        # pinned and copied without blocking when the model is on a GPU
        return move_to_device(self.processor.pad(features, architecture=self.architecture), self.device)

    def _sanitize_parameters(self, max_tokens=None, autocast: str | None = None, **kwargs):
        """The options of every MetaEmbed pipeline, then the task's own (`_task_parameters`): `max_tokens`, padded
        tokens per backbone pass when a list is read with `batch_size` > 1 (default 2048); `autocast`, `"bf16"` or
        `"fp16"` to compute in lower precision (outputs stay float32)."""
        preprocess_params, forward_params, postprocess_params = self._task_parameters(**kwargs)
        forward_params = dict(forward_params)
        if max_tokens is not None:
            forward_params["max_tokens"] = max_tokens
        if autocast is not None:
            forward_params["autocast"] = check_autocast(autocast)
        return preprocess_params, forward_params, postprocess_params

    def _in_length_order(self, inputs, batch_size: int, preprocess_params, forward_params, postprocess_params):
        """The results for a list of inputs: longest first in token-budget batches of at most `batch_size` samples
        (each backbone's padded tokens within `max_tokens`), handed back in input order."""
        prepared = [self.preprocess(item, **preprocess_params) for item in inputs]
        rows = [row for item in prepared for row in item["features"]]  # one feature row per input
        max_tokens = forward_params.get("max_tokens") or DEFAULT_MAX_TOKENS

        def run_batch(batch_rows: list) -> list:
            outputs = self.forward({"features": batch_rows}, **forward_params)
            return [self.postprocess(_one_sample(outputs, r), **postprocess_params) for r in range(len(batch_rows))]

        return run_in_input_order(rows, run_batch, max_tokens, batch_size)

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        """As `Pipeline.get_iterator`, but batches are padded by the MetaEmbed processor (in `_forward`), and a list
        read with `batch_size` > 1 runs longest first in token-budget batches (results in input order)."""
        if isinstance(inputs, Sized) and batch_size > 1:
            params = (preprocess_params, forward_params, postprocess_params)
            return iter(self._in_length_order(inputs, batch_size, *params))
        if isinstance(inputs, Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:  # a generator or other iterable: read in order by one worker
            dataset, num_workers = PipelineIterator(inputs, self.preprocess, preprocess_params), 0
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_concat_features)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


class MetaEmbedFeatureExtractionPipeline(MetaEmbedPipelineMixin, Pipeline):
    """`pipeline("feature-extraction")` for MetaEmbed models (`MetaEmbedModel` or any `MetaEmbedFor*` model, whose
    base model is used), in transformers' convention: per input, what the model returns for a batch of that one
    input, as nested lists (tensors with `return_tensors=True`).

    Per input (see the module docstring): the fused unit states `(1, units, dim)` (one row per residue or word,
    padding removed, the same whatever `batch_size`); with `pooled=True` the pooled vector `(1, dim)`; with
    `return_fusion_weights=True` a dict of those `features`, the `fusion_weights (1, units, backbones)` and the
    `units`. Pair architectures give one row per segment instead of the leading 1.

    Args:
        model: the MetaEmbed model.
        processor: its `MetaEmbedProcessor`; loaded from `model.name_or_path` when omitted.
        truncation: cut inputs longer than a backbone accepts instead of raising (call-time argument too).
        return_tensors: return torch tensors instead of nested lists (call-time argument too).
        pooled: return the model's pooled vector (`pooler_output`) instead of the unit states.
        return_fusion_weights: return a dict with the per-unit fusion weights beside the features.
    """

    def __init__(self, model, processor: MetaEmbedProcessor | None = None, **kwargs: Any) -> None:
        super().__init__(model=model, processor=self._processor_for(model, processor), **kwargs)
        self.base = self.model.base_model

    def _task_parameters(
        self,
        truncation: bool | None = None,
        return_tensors: bool | None = None,
        pooled: bool | None = None,
        return_fusion_weights: bool | None = None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(
                f"unknown feature-extraction argument(s) {sorted(kwargs)}; choose from: truncation, return_tensors, "
                "pooled, return_fusion_weights, batch_size, max_tokens, autocast"
            )
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        chosen = {"return_tensors": return_tensors, "pooled": pooled, "return_fusion_weights": return_fusion_weights}
        postprocess_params = {name: bool(value) for name, value in chosen.items() if value is not None}
        return preprocess_params, {}, postprocess_params

    def preprocess(self, inputs: str | Mapping, truncation: bool | None = None) -> dict:
        return {"features": self._features(inputs, truncation)}

    def _forward(self, model_inputs: dict, max_tokens=None, autocast: str | None = None) -> dict:
        features = model_inputs["features"]
        batch = self._batch(features)
        with precision(self.device, autocast):
            outputs = self.base(**batch)
        fusion_weights = outputs.fusion_weights
        if fusion_weights.dim() == 2:  # level="sequence": one weight per backbone, the segment its one unit
            fusion_weights = fusion_weights.unsqueeze(1)
        units = outputs.unit_mask.sum(dim=1).tolist()  # (segments,) real units (1 per segment at sequence level)
        # split the batch per sample, so the pipeline's unbatching hands postprocess one sample at a time
        segment_sample = batch.get("segment_sample_index")
        if segment_sample is None:
            segment_sample = torch.arange(len(features), device=outputs.unit_mask.device)
        segment_side = batch.get("segment_side_index", torch.zeros_like(segment_sample))
        samples = []
        for index, feature in enumerate(features):
            rows = (segment_sample == index).nonzero().flatten().tolist()
            samples.append(
                {
                    "pooled": outputs.pooler_output[index],
                    "unit_states": [outputs.last_hidden_state[row, : units[row]] for row in rows],
                    "fusion_weights": [fusion_weights[row, : units[row]] for row in rows],
                    "sides": [SIDES[int(segment_side[row])] for row in rows],
                    "units": feature.get("units"),
                }
            )
        return {"samples": samples}

    def postprocess(
        self,
        model_outputs: dict,
        return_tensors: bool = False,
        pooled: bool = False,
        return_fusion_weights: bool = False,
    ):
        sample = model_outputs["samples"]
        if isinstance(sample, list):  # not unbatched by the pipeline (batch of one)
            sample = sample[0]

        def per_segment(tensors: list[torch.Tensor]):
            """`(segments, units, width)`: one tensor when the segments are one (single) or alike, else a list."""
            tensors = [tensor.detach().cpu().float() for tensor in tensors]
            if len({tuple(tensor.shape) for tensor in tensors}) == 1:
                stacked = torch.stack(tensors)
                return stacked if return_tensors else stacked.tolist()
            return tensors if return_tensors else [tensor.tolist() for tensor in tensors]

        features = per_segment([sample["pooled"]] if pooled else sample["unit_states"])
        if not return_fusion_weights:
            return features
        result = {"features": features, "fusion_weights": per_segment(sample["fusion_weights"])}
        if self.architecture == "single":
            result["units"] = sample["units"]
        else:
            result["sides"] = sample["sides"]
        return result


class MetaEmbedTextClassificationPipeline(MetaEmbedPipelineMixin, TextClassificationPipeline):
    """`pipeline("text-classification")` for `MetaEmbedForSequenceClassification`: labels and scores exactly as
    transformers' `TextClassificationPipeline` gives them (`top_k`, `function_to_apply`; softmax over several
    labels, sigmoid for one or for multi-label, the raw value for regression), read through the MetaEmbed processor.

    Args:
        model: the MetaEmbed sequence classifier.
        processor: its `MetaEmbedProcessor`; loaded from `model.name_or_path` when omitted.
        truncation: cut inputs longer than a backbone accepts instead of raising (call-time argument).
    """

    def __init__(self, model, processor: MetaEmbedProcessor | None = None, **kwargs: Any) -> None:
        if not hasattr(model, "classifier"):
            raise TypeError(
                f"text-classification needs a MetaEmbedForSequenceClassification; {type(model).__name__} has no "
                "classification head: use pipeline('feature-extraction', model=..., trust_remote_code=True)"
            )
        super().__init__(model=model, processor=self._processor_for(model, processor), **kwargs)

    def check_model_type(self, supported_models) -> None:
        """The model was checked in `__init__` (MetaEmbed classifiers are not in transformers' own mapping)."""

    _task_parameters = TextClassificationPipeline._sanitize_parameters

    def preprocess(self, inputs: str | Mapping, truncation: bool | None = None) -> dict:
        return {"features": self._features(inputs, truncation)}

    def _forward(self, model_inputs: dict, max_tokens=None, autocast: str | None = None) -> dict:
        with precision(self.device, autocast):
            logits = self.model(**self._batch(model_inputs["features"])).logits
        return {"logits": logits.float()}


__all__ = [
    "MetaEmbedFeatureExtractionPipeline",
    "MetaEmbedPipelineMixin",
    "MetaEmbedTextClassificationPipeline",
]
