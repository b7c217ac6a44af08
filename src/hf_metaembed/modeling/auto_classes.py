"""The one table of what a saved MetaEmbed folder registers with `transformers`: the Auto class of each model class,
the `auto_map` and `custom_pipelines` written into its `config.json`, and the bundle's entry files copied beside it.

Data only (the model, pipeline and sentence-transformers files are named, never imported), so every other file may
read it. Model code (copied next to a saved model for `trust_remote_code`): imports the standard library and
transformers' file copier only.
"""

import json
import os
import shutil

from transformers.dynamic_module_utils import get_relative_import_files

CONFIG_CLASS = "configuration_metaembed.MetaEmbedConfig"
# model class -> the Auto class that loads a folder it saved (feature extraction reads its base model)
AUTO_CLASSES = {
    "MetaEmbedModel": "AutoModel",
    "MetaEmbedForSequenceClassification": "AutoModelForSequenceClassification",
    "MetaEmbedForTokenClassification": "AutoModelForTokenClassification",
}
MODEL_FILE = "modeling_metaembed"
# files loaded by name from a saved folder rather than through the model's imports: the pipelines (`custom_pipelines`)
# and the sentence-transformers module (`modules.json`); copied with every file they import
ENTRY_FILES = ("pipeline_metaembed.py", "sentence_metaembed.py")
# sentence-transformers reads a saved folder through `modules.json`, naming this one module
SENTENCE_MODULES_FILE = "modules.json"
SENTENCE_MODULE_CLASS = "sentence_metaembed.MetaEmbedSentenceModule"


def auto_map() -> dict[str, str]:
    """`config.auto_map`: every Auto class resolvable from the folder, whichever model class saved it."""
    return {"AutoConfig": CONFIG_CLASS, **{auto: f"{MODEL_FILE}.{name}" for name, auto in AUTO_CLASSES.items()}}


def custom_pipelines(model_class_name: str) -> dict[str, dict]:
    """The `custom_pipelines` entry of a saved config: the pipelines a folder of this model class can serve."""
    tasks = {
        "feature-extraction": {
            "impl": "pipeline_metaembed.MetaEmbedFeatureExtractionPipeline",
            "pt": [AUTO_CLASSES.get(model_class_name, "AutoModel")],
            "type": "text",
        }
    }
    if model_class_name == "MetaEmbedForSequenceClassification":
        tasks["text-classification"] = {
            "impl": "pipeline_metaembed.MetaEmbedTextClassificationPipeline",
            "pt": ["AutoModelForSequenceClassification"],
            "type": "text",
        }
    return tasks


def copy_entry_files(folder: str | os.PathLike, origin: str | os.PathLike | None = None) -> list[str]:
    """Copy `ENTRY_FILES` and the bundle files they import into `folder` (beside the model's own code files).

    Each is taken from beside this file or, where this code was itself loaded as remote code (transformers then
    copies only the files the model imports), from `origin`, the folder the model was loaded from. Returns the entry
    files found in neither (the caller warns: that folder's pipelines or sentence-transformers module would fail).
    """
    places = [os.path.dirname(os.path.abspath(__file__))]
    if origin is not None and os.path.isdir(origin):
        places.append(os.path.abspath(origin))
    missing = []
    for name in ENTRY_FILES:
        source = next(
            (os.path.join(place, name) for place in places if os.path.isfile(os.path.join(place, name))), None
        )
        if source is None:
            missing.append(name)
            continue
        for path in (source, *get_relative_import_files(source)):
            target = os.path.join(folder, os.path.basename(path))
            if not os.path.exists(target):
                shutil.copyfile(path, target)
    return missing


def write_sentence_transformers_files(folder: str | os.PathLike) -> None:
    """Write the `modules.json` that makes a saved MetaEmbed folder a sentence-transformers model."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": SENTENCE_MODULE_CLASS}]
    with open(os.path.join(folder, SENTENCE_MODULES_FILE), "w", encoding="utf-8") as handle:
        json.dump(modules, handle, indent=2)


__all__ = [
    "AUTO_CLASSES",
    "ENTRY_FILES",
    "auto_map",
    "copy_entry_files",
    "custom_pipelines",
    "write_sentence_transformers_files",
]
