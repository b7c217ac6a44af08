"""Pipelines for MetaEmbed models: `pipeline("feature-extraction")` and `pipeline("text-classification")`.

Every saved model carries both (`modeling/pipeline_metaembed.py`, registered in its `config.json`), so the standard
task names work wherever the folder goes, with or without this library:

```python
from transformers import pipeline

extractor = pipeline("feature-extraction", model="path/or/hub-id", trust_remote_code=True)
extractor("MKTAYIAKQRQISFVKSHFSRQ")               # (1, units, dim) nested lists, as transformers gives them
extractor("MKTAYIAKQRQISFVKSHFSRQ", pooled=True)  # (1, dim): the pooled vector
```

The outputs and options (`pooled`, `return_fusion_weights`, `return_tensors`) are described in
`hf_metaembed.modeling.pipeline_metaembed`.

Importing this module also registers the task `"metaembed-feature-extraction"`, which needs no `trust_remote_code`
(the installed code runs), and lets you pass objects already loaded:

```python
import hf_metaembed.integrations.pipelines  # registers "metaembed-feature-extraction"

extractor = pipeline("metaembed-feature-extraction", model="path/or/hub-id")
extractor = pipeline("feature-extraction", model=model, processor=processor,
                     pipeline_class=MetaEmbedFeatureExtractionPipeline)
extractor(["MKTAY", "GSHMLV"], batch_size=2)
```
"""

from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from ..modeling.pipeline_metaembed import MetaEmbedFeatureExtractionPipeline, MetaEmbedTextClassificationPipeline

TASK = "metaembed-feature-extraction"

PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MetaEmbedFeatureExtractionPipeline, pt_model=AutoModel)

__all__ = ["TASK", "MetaEmbedFeatureExtractionPipeline", "MetaEmbedTextClassificationPipeline"]
