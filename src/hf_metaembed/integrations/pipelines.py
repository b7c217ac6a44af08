"""`pipeline("feature-extraction")` for MetaEmbed models: raw sequences in, fused embeddings and fusion weights out.

```python
from transformers import pipeline
import hf_metaembed.integrations.pipelines  # registers the "metaembed-feature-extraction" task

extractor = pipeline("metaembed-feature-extraction", model="path/or/hub-id")
result = extractor("MKTAYIAKQRQISFVKSHFSRQ")
result["embedding"]        # (dim,) one fused vector for the sequence
result["unit_embeddings"]  # (units, dim) fused residue (or word) states
result["fusion_weights"]   # (units, backbones): which backbone each unit relied on
result["units"]            # the residues (or words) those rows belong to

# or with the standard task name and objects already loaded:
extractor = pipeline("feature-extraction", model=model, processor=processor,
                     pipeline_class=MetaEmbedFeatureExtractionPipeline)
extractor(["MKTAY", "GSHMLV"], batch_size=2)
```

Pair architectures take `{"ligand": [chains], "receptor": [chains]}` per input and return the sample's `embedding`
plus a `segments` list (side, `unit_embeddings`, `fusion_weights` of each side or chain). At `level="sequence"`
`fusion_weights` is one weight per backbone and there are no unit embeddings. Values are nested Python lists, or
torch tensors with `return_tensors=True`.

Imports only torch, transformers and its sibling model files.
"""

from collections.abc import Mapping, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from ..modeling.processing_metaembed import MetaEmbedProcessor

TASK = "metaembed-feature-extraction"
SIDES = ("ligand", "receptor")


def _concat_features(items: list[dict]) -> dict:
    """Collate preprocessed inputs: padding happens in `_forward` with the processor, which knows the layout."""
    return {"features": [feature for item in items for feature in item["features"]]}


class MetaEmbedFeatureExtractionPipeline(Pipeline):
    """Fused embeddings and per-unit fusion weights of a MetaEmbed model (`MetaEmbedModel` or any `MetaEmbedFor*`
    model, whose base model is used).

    Args:
        model: the MetaEmbed model.
        processor: its `MetaEmbedProcessor`; loaded from `model.name_or_path` when omitted.
        truncation: cut inputs longer than a backbone accepts instead of raising (call-time argument too).
        return_tensors: return torch tensors instead of nested lists (call-time argument too).
    """

    _load_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def __init__(self, model, processor: MetaEmbedProcessor | None = None, **kwargs: Any) -> None:
        if processor is None:
            source = getattr(model, "name_or_path", None)
            if not source:
                raise ValueError(
                    "this model was not loaded from a folder or the Hub, so its processor cannot be found: pass "
                    "processor=MetaEmbedProcessor.from_backbones(...) (or the saved processor)"
                )
            processor = MetaEmbedProcessor.from_pretrained(source)
        if not hasattr(processor, "pad") or not hasattr(processor, "unit_types"):
            raise TypeError(f"processor must be a MetaEmbedProcessor, got {type(processor).__name__}")
        super().__init__(model=model, processor=processor, **kwargs)
        self.base = self.model.base_model

    def _sanitize_parameters(self, truncation: bool | None = None, return_tensors: bool | None = None, **kwargs):
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        postprocess_params = {} if return_tensors is None else {"return_tensors": return_tensors}
        return preprocess_params, {}, postprocess_params

    @property
    def architecture(self) -> str:
        return self.base.config.architecture

    def preprocess(self, inputs: str | Mapping, truncation: bool | None = None) -> dict:
        """One input (a sequence, or `{"ligand": [...], "receptor": [...]}`) to its per-sample processor features."""
        if self.architecture == "single":
            if not isinstance(inputs, str):
                raise TypeError(
                    f"architecture 'single' embeds plain sequences; got {type(inputs).__name__} ({inputs!r:.60})"
                )
            features = self.processor([inputs], return_tensors=None, truncation=truncation)
            features[0]["units"] = self._units(inputs)
            return {"features": features}
        if not isinstance(inputs, Mapping) or set(inputs) != set(SIDES):
            raise TypeError(
                f"architecture {self.architecture!r} embeds complexes: pass {{'ligand': [chain, ...], 'receptor': "
                f"[chain, ...]}} per input; got {inputs!r:.80}"
            )
        features = self.processor(
            ligand=[list(inputs["ligand"])],
            receptor=[list(inputs["receptor"])],
            return_tensors=None,
            truncation=truncation,
        )
        return {"features": features}

    def _units(self, sequence: str) -> list[str]:
        """The units of a sequence as the processor reads them (residues, or whitespace-separated words)."""
        if "residue" in self.processor.unit_types:
            return list("".join(sequence.split()).upper())
        return sequence.split()

    def _forward(self, model_inputs: dict) -> dict:
        features = model_inputs["features"]
        batch = self.processor.pad(features)
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        outputs = self.base(**batch)
        # split the batch per sample, so the pipeline's unbatching hands postprocess one sample at a time
        segment_sample = batch.get("segment_sample_index")
        if segment_sample is None:
            segment_sample = torch.arange(len(features), device=outputs.unit_mask.device)
        segment_side = batch.get("segment_side_index", torch.zeros_like(segment_sample))
        samples = []
        for index, feature in enumerate(features):
            rows = (segment_sample == index).nonzero().flatten().tolist()
            segments = []
            for row in rows:
                segment = {"side": SIDES[int(segment_side[row])], "fusion_weights": outputs.fusion_weights[row]}
                if self.base.config.level == "unit":
                    units = int(outputs.unit_mask[row].sum())
                    segment["fusion_weights"] = segment["fusion_weights"][:units]
                    segment["unit_embeddings"] = outputs.last_hidden_state[row, :units]
                segments.append(segment)
            samples.append(
                {"embedding": outputs.pooler_output[index], "segments": segments, "units": feature.get("units")}
            )
        return {"samples": samples}

    def postprocess(self, model_outputs: dict, return_tensors: bool = False) -> dict:
        sample = model_outputs["samples"]
        if isinstance(sample, list):  # not unbatched by the pipeline (batch of one)
            sample = sample[0]

        def convert(tensor: torch.Tensor):
            tensor = tensor.detach().cpu()
            return tensor if return_tensors else tensor.tolist()

        segments = [
            {key: convert(value) if isinstance(value, torch.Tensor) else value for key, value in segment.items()}
            for segment in sample["segments"]
        ]
        result = {"embedding": convert(sample["embedding"])}
        if self.architecture == "single":
            result.update({key: value for key, value in segments[0].items() if key != "side"})
            if sample["units"] is not None and "unit_embeddings" in result:
                result["units"] = sample["units"][: len(result["unit_embeddings"])]
        else:
            result["segments"] = segments
        return result

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        """As `Pipeline.get_iterator`, but batches are padded by the MetaEmbed processor (in `_forward`)."""
        if isinstance(inputs, Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:  # a generator or other iterable: read in order by one worker
            dataset, num_workers = PipelineIterator(inputs, self.preprocess, preprocess_params), 0
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_concat_features)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MetaEmbedFeatureExtractionPipeline, pt_model=AutoModel)

__all__ = ["TASK", "MetaEmbedFeatureExtractionPipeline"]
