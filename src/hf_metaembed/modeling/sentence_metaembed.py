"""sentence-transformers reads a saved MetaEmbed folder: `SentenceTransformer(folder, trust_remote_code=True)`.

`save_pretrained` writes `modules.json` naming one module, `MetaEmbedSentenceModule` from this file (copied next to the
model), so sentence-transformers loads the model and its processor from the folder and `encode` returns the model's
pooled vectors (`pooler_output`: for a `MetaEmbedFor*` model, its base model's), with or without `hf_metaembed`
installed:

```python
from sentence_transformers import SentenceTransformer

encoder = SentenceTransformer("path/or/hub-id", trust_remote_code=True)
encoder.encode(["a sentence to embed", "another one"])  # (2, dim)
```

Model code (copied next to a saved model for `trust_remote_code`, as one of `auto_classes.ENTRY_FILES`): imports torch,
transformers and its siblings; the model files never import it back (sentence-transformers itself is never imported).
"""

import os
from typing import Any

import torch
from torch import nn

from .auto_classes import SENTENCE_MODULE_CLASS, SENTENCE_MODULES_FILE, write_sentence_transformers_files
from .configuration_metaembed import MetaEmbedConfig
from .modeling_metaembed import MetaEmbedForSequenceClassification, MetaEmbedForTokenClassification, MetaEmbedModel
from .processing_metaembed import MetaEmbedProcessor

MODULES_FILE, MODULE_CLASS = SENTENCE_MODULES_FILE, SENTENCE_MODULE_CLASS
# what the base model's forward reads from a padded batch
MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "token_unit_index",
    "unit_mask",
    "segment_sample_index",
    "segment_side_index",
)
MODEL_CLASSES = {
    model_class.__name__: model_class
    for model_class in (MetaEmbedModel, MetaEmbedForSequenceClassification, MetaEmbedForTokenClassification)
}


class MetaEmbedSentenceModule(nn.Module):
    """A MetaEmbed model and its processor as the one module of a `SentenceTransformer`.

    `preprocess` pads texts (or protein sequences) with the processor; `forward` puts the model's pooled vector under
    `sentence_embedding (batch, dim)`. Pair architectures compare complexes, which `encode` cannot pass: use the
    model, or `pipeline("feature-extraction", ...)`, for those.

    Args:
        model: a `MetaEmbedModel` or `MetaEmbedFor*` model (its base model makes the vectors).
        processor: its `MetaEmbedProcessor`.
    """

    # SentenceTransformer.save writes this module's files (model, processor, code) in the folder's root
    save_in_root = True

    def __init__(self, model, processor) -> None:
        super().__init__()
        self.model = model
        self.processor = processor

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        model_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> "MetaEmbedSentenceModule":
        """Load the model (the class its `config.json` names) and the processor saved in the folder."""
        hub = {"revision": revision, "token": token, "cache_dir": cache_folder, "local_files_only": local_files_only}
        if subfolder:
            model_name_or_path = os.path.join(model_name_or_path, subfolder)
        config = MetaEmbedConfig.from_pretrained(model_name_or_path, **hub)
        names = config.architectures or ["MetaEmbedModel"]
        model_class = MODEL_CLASSES.get(names[0], MetaEmbedModel)
        model = model_class.from_pretrained(model_name_or_path, config=config, **hub, **(model_kwargs or {}))
        try:
            processor = MetaEmbedProcessor.from_pretrained(model_name_or_path, **hub)
        except OSError as error:
            raise OSError(
                f"{model_name_or_path} holds a MetaEmbed model but no processor: save it beside the model with "
                f"processor.save_pretrained(folder) ({error})"
            ) from error
        return cls(model.eval(), processor)

    @property
    def max_seq_length(self) -> int | None:
        """The most tokens the shortest-reading backbone accepts."""
        limits = [limit for limit in self.processor.max_lengths if limit is not None]
        return min(limits) if limits else None

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """A padded batch of `inputs` (strings), each after `prompt` when one is given."""
        if self.model.config.architecture != "single":
            raise ValueError(
                f"this MetaEmbed model compares complexes (architecture {self.model.config.architecture!r}), which "
                "SentenceTransformer.encode cannot pass; call the model with processor(ligand=..., receptor=...), or "
                "use pipeline('feature-extraction', model=folder, trust_remote_code=True)"
            )
        texts = [(prompt or "") + text for text in inputs]
        return dict(self.processor(texts))

    def forward(self, features: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        outputs = self.model.base_model(**{name: features[name] for name in MODEL_INPUTS if name in features})
        features["sentence_embedding"] = outputs.pooler_output
        return features

    def get_embedding_dimension(self) -> int:
        """Size of the vectors `encode` returns (the model's pooled vector)."""
        return self.model.base_model.pairing.output_dim

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        """Save model and processor as `save_pretrained` does (which also writes `modules.json`)."""
        self.model.save_pretrained(output_path)
        self.processor.save_pretrained(output_path)


__all__ = ["MetaEmbedSentenceModule", "write_sentence_transformers_files"]
