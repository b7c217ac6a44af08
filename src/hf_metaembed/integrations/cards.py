"""Model cards and Hub uploads for MetaEmbed models.

`render_model_card` fills `integrations/model_cards/template.md` with the model's backbones, every block it runs
(fusion, unit encoder, pooling, pair architecture, head, loss: each described by its own card text and settings, so a
block registered from outside the package is described too), how to load it with `trust_remote_code`, and evaluation
results; its metadata (base models = the backbones, library, tags, pipeline tag, metrics, `model-index`) is a
`huggingface_hub.ModelCardData`, so the Hub reads it as usual.
`save_for_hub` writes everything a Hub repo needs into one folder (weights, config, model code, processor with its
tokenizers and code, `README.md`) and `push_to_hub` uploads that folder in one commit:

```python
from hf_metaembed.integrations.cards import push_to_hub

push_to_hub(model, processor, "me/esm2-prott5-dme", eval_results=trainer.evaluate(), eval_dataset="PPB-Affinity")
```

Not a model file: it uses huggingface_hub and jinja2 (through `ModelCard.from_template`).
"""

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers.utils import logging

from .._version import __version__
from ..modeling.auto_classes import AUTO_CLASSES, custom_pipelines
from ..modeling.configuration_metaembed import MetaEmbedConfig
from ..modeling.fusion import common_size
from ..modeling.modeling_metaembed import MetaEmbedPreTrainedModel
from ..modeling.processing_metaembed import PROCESSOR_CONFIG_NAME, MetaEmbedProcessor
from ..modeling.safe_files import find_file

logger = logging.get_logger(__name__)

TEMPLATE_PATH = Path(__file__).parent / "model_cards" / "template.md"
LIBRARY_NAME = "transformers"  # the checkpoint loads with plain transformers (remote code)
# the card's pipeline tag: a task the saved folder serves (the pipelines its config registers, custom_pipelines)
PIPELINE_TAGS = {
    name: "text-classification" if "text-classification" in custom_pipelines(name) else "feature-extraction"
    for name in ("MetaEmbedModel", "MetaEmbedForSequenceClassification", "MetaEmbedForTokenClassification")
}
# Trainer's evaluate() keys that are bookkeeping, not metrics
_NOT_METRICS = re.compile(
    r"^(?:eval_|test_)?(?:runtime|samples_per_second|steps_per_second|epoch|model_preparation_time)$"
)


def hub_base_models(names: Sequence[str | None]) -> list[str]:
    """The backbone names that are Hub model ids (local folders and unnamed backbones are left out)."""
    base_models = []
    for name in names:
        if not name or os.path.exists(name) or name.startswith((".", "/", "~")):
            continue
        try:
            validate_repo_id(name)
        except HFValidationError:
            continue
        if name not in base_models:
            base_models.append(name)
    return base_models


def eval_results_from_metrics(
    metrics: Mapping[str, float],
    dataset_name: str,
    *,
    dataset_type: str | None = None,
    dataset_split: str | None = None,
    task_type: str = "text-classification",
) -> list[EvalResult]:
    """`EvalResult`s from a metrics dict such as `Trainer.evaluate()` returns.

    The `eval_`/`test_` prefixes are dropped, and timing and epoch entries are skipped (`eval_loss` is kept as
    `loss`). `dataset_type` (a Hub dataset id, or any short name) defaults to `dataset_name`.
    """
    results = []
    for key, value in metrics.items():
        if _NOT_METRICS.match(key) or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metric = re.sub(r"^(?:eval|test)_", "", key)
        results.append(
            EvalResult(
                task_type=task_type,
                dataset_type=dataset_type or dataset_name,
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                metric_type=metric,
                metric_name=metric,
                metric_value=float(value),
            )
        )
    if not results:
        raise ValueError(f"no metric values in {dict(metrics)!r}; pass a dict such as {{'spearman': 0.71}}")
    return results


def _config_of(model) -> MetaEmbedConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, MetaEmbedConfig) and getattr(config, "model_type", None) != MetaEmbedConfig.model_type:
        raise TypeError(
            f"expected a MetaEmbed model, got {type(model).__name__}; pass the model itself, not a wrapper"
        )
    return config


def _model_settings(config: MetaEmbedConfig) -> dict[str, Any]:
    """The settings no single block owns: how backbone states are read and fused, and the task."""
    settings: dict[str, Any] = {
        "level": config.level,
        "subword_pooling": config.subword_pooling,
        "fusion_dim": common_size(config, config.backbone_hidden_sizes),
        "freeze_backbones": config.freeze_backbones,
    }
    if config.problem_type is not None:
        settings["problem_type"] = config.problem_type
    return settings


def _problem_type(config: MetaEmbedConfig) -> str | None:
    """`problem_type`, or what the first forward with labels will infer for one label (regression, as transformers)."""
    return config.problem_type or ("regression" if config.num_labels == 1 else None)


def _sentence(text: str) -> str:
    """A block's card text as a sentence (pooler and head texts are phrases: "mean over the real positions")."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _stages(config: MetaEmbedConfig, model_class: str) -> list[dict[str, Any]]:
    """Every block the model runs (`config.blocks()`, in pipeline order) with its card text and its settings.

    A headless `MetaEmbedModel` runs no head and no loss; the regression loss is listed only for sequence regression
    (classification losses follow `problem_type`, as in `transformers`).
    """
    regression = model_class == "MetaEmbedForSequenceClassification" and _problem_type(config) == "regression"
    skipped = {"MetaEmbedModel": {"head", "loss"}}.get(model_class, set() if regression else {"loss"})
    stages = []
    for stage, block in config.blocks().items():
        if stage in skipped:
            continue
        # a block registered without card text is described by the first line of its own docstring
        text = block.card_text or (block.__dict__.get("__doc__") or "").strip().split("\n")[0]
        stages.append(
            {
                "stage": stage,
                "name": getattr(config, stage),
                "text": _sentence(text),
                "settings": block.settings(config),
            }
        )
    return stages


def _backbone_rows(config: MetaEmbedConfig, hub_names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for index in range(config.num_backbones):
        name = config.backbone_names[index]
        if name in hub_names:
            link = f"[{name}](https://huggingface.co/{name})"
        else:
            link = f"`{os.path.basename(os.path.normpath(name))}` (local)" if name else "(unnamed)"
        rows.append(
            {
                "link": link,
                "model_type": config.backbone_configs[index].get("model_type"),
                "unit_type": config.backbone_unit_types[index],
                "layer": config.backbone_layers[index],
                "hidden_size": config.backbone_hidden_sizes[index],
            }
        )
    return rows


def model_card_data(
    model,
    *,
    eval_results: Sequence[EvalResult] | None = None,
    model_name: str | None = None,
    base_model: str | list[str] | None = None,
    tags: Sequence[str] = (),
    **card_data: Any,
) -> ModelCardData:
    """The card's metadata: base models (the Hub backbones), library, tags, pipeline tag, metrics, `model-index`.

    Extra keyword arguments (`license`, `datasets`, `language`, ...) go to `ModelCardData`, which validates them.
    """
    config = _config_of(model)
    model_class = type(model).__name__
    base = base_model if base_model is not None else hub_base_models(config.backbone_names)
    all_tags = ["hf_metaembed", "meta-embeddings", config.fusion]
    if config.architecture != "single":
        all_tags.append(f"pair-architecture-{config.architecture}")
    if "residue" in config.backbone_unit_types:
        all_tags += ["protein", "biology"]
    all_tags += list(tags)
    metrics = sorted({result.metric_type for result in eval_results}) if eval_results else None
    return ModelCardData(
        base_model=base or None,
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAGS.get(model_class, "feature-extraction"),
        tags=all_tags,
        metrics=metrics,
        eval_results=list(eval_results) if eval_results else None,
        model_name=model_name,
        **card_data,
    )


def render_model_card(
    model,
    *,
    repo_id: str | None = None,
    eval_results: Mapping[str, float] | Sequence[EvalResult] | None = None,
    eval_dataset: str | None = None,
    description: str | None = None,
    template_path: str | os.PathLike | None = None,
    **card_data: Any,
) -> ModelCard:
    """Render the model card of a MetaEmbed model.

    Args:
        model: a `MetaEmbedModel` or `MetaEmbedFor*` model.
        repo_id: the Hub repo the card describes (used in the loading example and as the default model name).
        eval_results: `EvalResult`s, or a metrics dict (e.g. `Trainer.evaluate()`) measured on `eval_dataset`.
        eval_dataset: name of the evaluation dataset, required with a metrics dict.
        description: a paragraph under the title.
        template_path: a Jinja template to use instead of `integrations/model_cards/template.md`.
        **card_data: `model_name`, `base_model`, `tags`, `license`, `datasets`, `language`, ... (`ModelCardData`).

    Returns:
        A `huggingface_hub.ModelCard`; `card.save("README.md")` writes it.
    """
    config = _config_of(model)
    model_class = type(model).__name__
    pipeline_tag = PIPELINE_TAGS.get(model_class, "feature-extraction")
    if isinstance(eval_results, Mapping):
        if not eval_dataset:
            raise ValueError("eval_results is a metrics dict: name the dataset it was measured on with eval_dataset=")
        eval_results = eval_results_from_metrics(eval_results, eval_dataset, task_type=pipeline_tag)
    model_name = card_data.pop("model_name", None) or (repo_id.split("/")[-1] if repo_id else None)
    model_name = model_name or f"metaembed-{config.fusion}-{config.num_backbones}-backbones"
    data = model_card_data(model, eval_results=eval_results, model_name=model_name, **card_data)
    hub_names = hub_base_models(config.backbone_names)
    protein = "residue" in config.backbone_unit_types
    head_class = model_class if model_class != "MetaEmbedModel" else None
    task = {
        "regression": "regression",
        "single_label_classification": "classification",
        "multi_label_classification": "multi-label classification",
    }.get(_problem_type(config), "classification")
    if model_class == "MetaEmbedForTokenClassification":
        task = "per-unit classification"
    return ModelCard.from_template(
        data,
        template_path=str(template_path or TEMPLATE_PATH),
        model_name=model_name,
        description=description or "",
        backbones=_backbone_rows(config, hub_names),
        backbone_weights=config.save_backbone_weights,
        third_party_code=[
            {"index": index, "name": record.get("name"), "revision": record.get("code_revision")}
            for index, record in enumerate(config.backbones)
            if record.get("trust_remote_code")
        ],
        frozen=config.freeze_backbones,
        unit_name="residue" if protein else "word",
        settings=_model_settings(config),
        stages=_stages(config, model_class),
        fusion=config.fusion,
        unit_encoder=config.unit_encoder,
        architecture=config.architecture,
        head=config.head,
        head_class=head_class,
        task=task,
        num_labels=config.num_labels,
        auto_class=AUTO_CLASSES.get(model_class, "AutoModel"),
        repo_id=repo_id or "path/to/this/model",
        example_input='["MKTAYIAKQRQISFVKSHFSRQ"]' if protein else '["a sentence to embed"]',
        eval_results=data.eval_results or [],
        library_version=__version__,
    )


def save_for_hub(
    model,
    processor,
    folder: str | os.PathLike,
    eval_results: Mapping[str, float] | Sequence[EvalResult] | None = None,
    max_shard_size: int | str | None = None,
    **card_kwargs: Any,
) -> list[str]:
    """Write everything a Hub repo of this model needs into `folder`.

    That is the model (`config.json` with its `auto_map`, weights, the model code files), the processor (its
    tokenizers, `processor_config.json` and code) and `README.md` (see `render_model_card`, which receives
    `eval_results` and `card_kwargs`). `max_shard_size` goes to `save_pretrained`.

    Returns:
        The written files, relative to `folder`, sorted.
    """
    folder = Path(folder)
    model.save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size is not None else {}))
    if processor is not None:
        processor.save_pretrained(folder)
    render_model_card(model, eval_results=eval_results, **card_kwargs).save(folder / "README.md")
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def push_to_hub(
    model,
    processor,
    repo_id: str,
    *,
    eval_results: Mapping[str, float] | Sequence[EvalResult] | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    commit_description: str | None = None,
    max_shard_size: int | str | None = None,
    **card_kwargs: Any,
):
    """Create (or reuse) the Hub repo `repo_id` and upload model, code files, processor and card in one commit.

    Keyword arguments beyond the Hub ones go to `render_model_card` (`eval_dataset`, `description`, `license`,
    `tags`, ...). `model.push_to_hub(repo_id, processor=processor, ...)` calls this. Without `processor`, the one
    saved where the model was loaded from (`model.name_or_path`) is uploaded; if there is none, a warning says the
    repo will hold no tokenizers.

    Returns:
        The `huggingface_hub.CommitInfo` of the upload.
    """
    if processor is None:
        processor = _saved_processor(model)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        files = save_for_hub(
            model,
            processor,
            folder,
            eval_results=eval_results,
            repo_id=repo_id,
            max_shard_size=max_shard_size,
            **card_kwargs,
        )
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=os.path.join(folder, name)) for name in files
        ]
        return api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or "Upload MetaEmbed model, processor and card",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )


def _saved_processor(model) -> MetaEmbedProcessor | None:
    """The processor saved beside the model's weights (in the folder or Hub repo it was loaded from), or None with a
    warning that the upload will hold no tokenizers."""
    source = str(getattr(model, "name_or_path", "") or "")
    try:
        found = find_file(source, PROCESSOR_CONFIG_NAME) if source else None
    except OSError:  # a Hub id that cannot be reached (offline, unknown repo) holds no processor we can read
        found = None
    if found is not None:
        logger.info(f"push_to_hub: uploading the processor saved in {source}")
        return MetaEmbedProcessor.from_pretrained(source)
    logger.warning(
        "push_to_hub without processor=, and none is saved where the model was loaded from: the repo will hold no "
        "tokenizers, so AutoProcessor.from_pretrained(repo_id) will fail; pass processor=processor to upload it too"
    )
    return None


__all__ = [
    "eval_results_from_metrics",
    "hub_base_models",
    "model_card_data",
    "push_to_hub",
    "render_model_card",
    "save_for_hub",
]

MetaEmbedPreTrainedModel.hub_publisher = staticmethod(push_to_hub)
