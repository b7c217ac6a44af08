"""`MetaEmbedPreTrainedModel`: what every MetaEmbed model shares: building over pretrained backbones
(`from_backbones`), loading (full and backbone-free checkpoints, checked before any tensor is built), crash-safe
saving, Hub upload, initialisation of new layers and keeping frozen backbones frozen.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its sibling files.
"""

import copy
import os
import re
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_utils import load_state_dict
from transformers.utils import cached_file, logging

from .auto_classes import auto_map, copy_entry_files, custom_pipelines, write_sentence_transformers_files
from .backbone_families import backbone_family
from .backbones import infer_unit_type, looks_local, sentence_pooling, sentence_transformers_defaults
from .configuration_metaembed import MetaEmbedConfig, check_setting_names, legacy_key_mapping, rename_legacy_keys
from .loading_metaembed import fetch_backbones, load_backbone_safely
from .remote_code_backbones import code_folder, runs_own_code, save_backbone_code, trust_flags
from .safe_files import MODEL_WEIGHT_FILES, checkpoint_shapes, safetensors_flag, staged_save, weights_fingerprint
from .trainable_blocks import warn_frozen_blocks
from .weight_init import init_module_weights

logger = logging.get_logger(__name__)

_BACKBONE_KEY = re.compile(r"^(?:metaembed\.)?backbone_\d+\.")


def _after_load(model: PreTrainedModel) -> PreTrainedModel:
    """Finish `from_pretrained` so the loaded model computes exactly what the saved one did.

    Loading replaces parameters with fresh ones that require gradients, which would silently train (and change the
    autograd path of) backbones the config says are frozen: freeze them again. Weights read from a safetensors file
    can sit at any byte offset, and CPU kernels pick their summation order by alignment, so the small fusion and head
    tensors (never the backbones) are copied into freshly allocated, aligned memory.
    """
    backbone_names = ("backbone_",)
    for module in model.modules():
        if hasattr(module, "freeze_backbones") and module.config.freeze_backbones:  # a MetaEmbedModel
            module._freeze(True)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part.startswith(backbone_names) for part in name.split(".")) or param.device.type != "cpu":
                continue
            if param.data_ptr() % 64:
                param.data = param.data.clone()
    return model


@contextmanager
def _config_as_saved(model: "MetaEmbedPreTrainedModel", with_backbones: bool, fingerprints: list[dict | None]):
    """Give the model's config what one save writes, for the duration of that save only (a save's options never
    stick to the model): whether the folder holds backbone weights, each backbone's fingerprint, the problem type the
    model settled on, and the Auto classes and pipelines the folder serves."""
    config = model.config
    saved = {
        "backbone_weights_saved": with_backbones,
        "save_backbone_weights": with_backbones,  # what release 0.1 wrote there (MetaEmbedConfig.from_dict reads it)
        "problem_type": getattr(model, "problem_type", None) or config.problem_type,
        "auto_map": auto_map(),
        "custom_pipelines": custom_pipelines(type(model).__name__),
    }
    before = {key: getattr(config, key, None) for key in saved}
    before_fingerprints = [record.get("fingerprint") for record in config.backbones]
    for key, value in saved.items():
        setattr(config, key, value)
    for record, fingerprint in zip(config.backbones, fingerprints):
        record["fingerprint"] = fingerprint
    try:
        yield config
    finally:
        for key, value in before.items():
            setattr(config, key, value)
        for record, fingerprint in zip(config.backbones, before_fingerprints):
            record["fingerprint"] = fingerprint


def _check_model_path(path) -> None:
    """A local path that is no folder is reported as such (transformers would call it a malformed Hub id)."""
    if path is None or not isinstance(path, str | os.PathLike):
        return
    name = os.fspath(path)
    if looks_local(name) and not os.path.isdir(os.path.expanduser(name)):
        what = "is a file, not a folder" if os.path.isfile(os.path.expanduser(name)) else "does not exist"
        raise OSError(
            f"no MetaEmbed model at {name!r}: the path {what}; pass the folder written by save_pretrained (or a Hub "
            "id such as 'me/my-model'), or build a model with MetaEmbedModel.from_backbones([...]) (from the command "
            "line: hf-metaembed build --backbones A,B -o FOLDER)"
        )


class MetaEmbedPreTrainedModel(PreTrainedModel):
    """Shared loading, saving, initialisation and freezing of MetaEmbed models."""

    config_class = MetaEmbedConfig
    base_model_prefix = "metaembed"
    main_input_name = "input_ids"
    # backbones that support it checkpoint their layers (`gradient_checkpointing_enable()`), for fine-tuning
    supports_gradient_checkpointing = True
    _no_split_modules = []

    def post_init(self) -> None:
        super().post_init()
        # checkpoints leave out a backbone's tied copies (T5's encoder.embed_tokens is its shared embedding), as
        # transformers does for any tied weight; listing them here lets Trainer's reload re-tie them silently
        # instead of reporting them as missing keys
        self._keys_to_ignore_on_save = set(self._keys_to_ignore_on_save or ()) | set(self.all_tied_weights_keys)

    def train(self, mode: bool = True) -> "MetaEmbedPreTrainedModel":
        if mode:  # adapters (peft) that froze the fusion or head: say once what to add to the config
            warn_frozen_blocks(self)
        return super().train(mode)

    def _initialize_weights(self, module: nn.Module, *args, **kwargs) -> None:
        """Each module once, as transformers does for its own models, also for modules with no parameters of their own
        (which transformers skips for remote code; weight_init.py says why that matters here)."""
        if not getattr(module, "_is_hf_initialized", False):
            self._init_weights(module)
            module._is_hf_initialized = True

    def _init_weights(self, module: nn.Module) -> None:
        init_module_weights(module, self.config.initializer_range)

    @classmethod
    def from_backbones(
        cls,
        backbones: list,
        *,
        revisions: list[str | None] | None = None,
        layers: list[str | int] | None = None,
        unit_types: list[str] | None = None,
        backbone_kwargs: dict | None = None,
        allow_pickle: bool = False,
        backbone_trust_remote_code: bool | list[bool] = False,
        backbone_code_revisions: list[str | None] | None = None,
        **config_kwargs,
    ) -> "MetaEmbedPreTrainedModel":
        """Build a model over pretrained backbones, loading each exactly once.

        Args:
            backbones: Hub ids or local folders (or already loaded `PreTrainedModel`s).
            revisions: Hub revision per backbone.
            layers: per backbone `"last"`, an int hidden-state index, a list of indices (combined by
                `layer_combine`), `"mix"` or `"attention"` (`backbone_layers=` is the same argument).
            unit_types: per backbone `"residue"` or `"word"`; guessed from each tokenizer when omitted.
            backbone_kwargs: extra `from_pretrained` arguments for every backbone (e.g. `dtype`).
            allow_pickle: also load backbones that only have pickle weights (`pytorch_model.bin`), which can run
                code when loaded; by default only safetensors weights are read (docs/RELIABILITY.md).
            backbone_trust_remote_code: run the own modelling code of backbones that ship it (`auto_map` in their
                config): one flag for all, or one per backbone. Only for those backbones' loading; without it such a
                backbone is refused at once, naming this flag. Their code files are saved beside the model, so it
                reloads with `AutoModel.from_pretrained(folder, trust_remote_code=True)` (remote_code_backbones.py).
            backbone_code_revisions: per backbone, the revision its code is read at (pinned in its record; None:
                the weights' revision).
            **config_kwargs: any `MetaEmbedConfig` field (`fusion`, `architecture`, `num_labels`, ...).
        """
        check_setting_names(config_kwargs, f"{cls.__name__}.from_backbones")
        if "backbone_layers" in config_kwargs:  # the config field's name for `layers`
            if layers is not None:
                raise TypeError("give the layers once: `layers=` or `backbone_layers=`, not both")
            layers = config_kwargs.pop("backbone_layers")
        revisions = list(revisions or [None] * len(backbones))
        trusted = trust_flags(backbone_trust_remote_code, len(backbones))
        code_revisions = list(backbone_code_revisions or [None] * len(backbones))
        loaded, names = [], []
        for index, (spec, revision) in enumerate(zip(backbones, revisions)):
            if isinstance(spec, PreTrainedModel):
                loaded.append(spec)
                names.append(spec.config._name_or_path or None)
            else:
                extra = dict(backbone_kwargs or {})
                extra["use_safetensors"] = safetensors_flag(extra.get("use_safetensors"), allow_pickle)
                extra.update(trust_remote_code=trusted[index], code_revision=code_revisions[index])
                loaded.append(load_backbone_safely(str(spec), revision, index, allow_pickle, **extra))
                names.append(str(spec))
        if unit_types is None:
            unit_types = [
                infer_unit_type(_try_tokenizer(name, rev, trust), b.config)
                for name, rev, b, trust in zip(names, revisions, loaded, trusted)
            ]
        own_recipe = "pooling" not in config_kwargs and "pool_special_tokens" not in config_kwargs
        poolings = [sentence_pooling(name, rev) if own_recipe else None for name, rev in zip(names, revisions)]
        config_kwargs = {**sentence_transformers_defaults(poolings, config_kwargs), **config_kwargs}
        config = MetaEmbedConfig(
            backbone_configs=[b.config.to_dict() for b in loaded],
            backbone_names=names,
            backbone_revisions=revisions,
            backbone_unit_types=list(unit_types),
            backbone_layers=list(layers) if layers is not None else None,
            **config_kwargs,
        )
        for record, trust, code_revision in zip(config.backbones, trusted, code_revisions):
            # runs its own code (loaded only when trusted); never a family with its own classes (static vectors)
            if "auto_map" in record["config"] and backbone_family(record["config"]["model_type"]).config_class is None:
                record.update(trust_remote_code=trust, code_revision=code_revision)
        if own_recipe:
            # sentence vectors as a sentence-transformers backbone's config says, or a decoder's last (EOS) state
            for record, own_pooling in zip(config.backbones, poolings):
                record["sentence_pooling"] = own_pooling
                if record["sentence_pooling"] is None and backbone_family(record["config"]["model_type"]).causal:
                    record["sentence_pooling"] = {"mode": "lasttoken", "normalize": False}
        for backbone in loaded:
            for module in backbone.modules():
                module._is_hf_initialized = True
        return cls(config, backbones=loaded)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *model_args,
        allow_pickle: bool = False,
        backbone_paths: dict[int | str, str | os.PathLike] | None = None,
        verify_backbones: bool = True,
        **kwargs,
    ):
        """`PreTrainedModel.from_pretrained`, plus the backbone-free form: when the checkpoint holds only fusion and
        head weights, every backbone is loaded from its stored name and revision and merged in.

        Loading is safe by default (docs/RELIABILITY.md): weights come from safetensors only (`allow_pickle=True`
        opts in to pickle files such as `pytorch_model.bin`, which can run code when loaded), and a truncated or
        damaged weight file, or a config that does not describe the weights, is reported before the model is built.

        Args:
            backbone_paths: for a checkpoint saved without backbone weights, where to read backbones now (a folder
                or Hub id per backbone index or stored name) instead of their stored names.
            verify_backbones: for such a checkpoint, check each backbone's weights against the fingerprint recorded
                when it was saved and refuse a mismatch (`False`: use whatever weights are found).
        """
        _check_model_path(pretrained_model_name_or_path)
        kwargs["use_safetensors"] = safetensors_flag(kwargs.get("use_safetensors"), allow_pickle)
        config = kwargs.get("config")
        hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
        if not isinstance(config, MetaEmbedConfig) and pretrained_model_name_or_path is not None:
            config = MetaEmbedConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
            # where a backbone with its own code finds its code files (remote_code_backbones.py)
            config.name_or_path = str(pretrained_model_name_or_path)
        plain_folder = not any(key in kwargs for key in ("state_dict", "subfolder", "variant", "gguf_file"))
        if pretrained_model_name_or_path is not None and plain_folder:
            shapes = checkpoint_shapes(pretrained_model_name_or_path, allow_pickle, hub_kwargs)
            if shapes is not None and config is not None and not kwargs.get("ignore_mismatched_sizes"):
                cls._check_checkpoint_shapes(config, shapes)
        kwargs.setdefault("key_mapping", legacy_key_mapping())
        if config is None or config.backbone_weights_saved is not False or pretrained_model_name_or_path is None:
            if backbone_paths:
                raise ValueError(
                    "backbone_paths is for checkpoints saved without backbone weights; "
                    f"{pretrained_model_name_or_path} holds its backbones' weights already"
                )
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        else:
            checkpoint = cached_file(pretrained_model_name_or_path, "model.safetensors", **hub_kwargs)
            own_weights = rename_legacy_keys(load_state_dict(checkpoint))
            prefix = "metaembed." if any(key.startswith("metaembed.") for key in own_weights) else ""
            merged = dict(own_weights)
            backbones = fetch_backbones(
                config, backbone_paths, verify_backbones, allow_pickle, kwargs["use_safetensors"]
            )
            for index, backbone in enumerate(backbones):
                merged.update({f"{prefix}backbone_{index}.{k}": v for k, v in backbone.state_dict().items()})
            kwargs["config"] = config
            loaded = super().from_pretrained(None, *model_args, state_dict=merged, **kwargs)
        _after_load(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded

    @classmethod
    def _check_checkpoint_shapes(cls, config: MetaEmbedConfig, shapes: dict[str, tuple[int, ...]]) -> None:
        """Compare the checkpoint's tensor shapes with those the config builds (on the meta device: no memory)."""
        shapes = rename_legacy_keys(shapes)
        with torch.device("meta"):
            skeleton = cls(copy.deepcopy(config))
        expected = {key.removeprefix("metaembed."): tuple(v.shape) for key, v in skeleton.state_dict().items()}
        wrong = [
            f"{name} is {list(shape)} in the checkpoint but {list(expected[name.removeprefix('metaembed.')])} in the "
            "config"
            for name, shape in shapes.items()
            if expected.get(name.removeprefix("metaembed."), shape) != shape
        ]
        if wrong:
            raise ValueError(
                f"config.json does not describe these weights ({len(wrong)} tensors differ, e.g. "
                f"{'; '.join(wrong[:3])}): the config was edited, or the weights come from another model. Restore the "
                "config that was saved with the weights, or pass ignore_mismatched_sizes=True to re-initialise the "
                "layers that differ"
            )

    # Set by `hf_metaembed.integrations.cards` when the library is installed: the function that uploads model,
    # processor and rendered card in one commit. The remote-code copy of this file never imports the library.
    hub_publisher = None

    def push_to_hub(self, repo_id: str, *args, processor=None, eval_results=None, **kwargs):
        """Upload the model to the Hub in one commit: weights, config, the model code files, `processor` (its
        tokenizers and code) when given, and a model card rendered from the packaged template
        (`hf_metaembed.integrations.cards.push_to_hub`; keyword arguments go to it: `private`, `token`, `revision`,
        `create_pr`, `commit_message`, and card fields such as `eval_dataset`, `license`, `description`).

        Where the model was loaded as remote code without `hf_metaembed` installed, this is transformers' own
        `push_to_hub` (model and code files, a generic card); push the processor with `processor.push_to_hub`.
        """
        publish = MetaEmbedPreTrainedModel.hub_publisher
        if publish is None:
            if processor is not None or eval_results is not None:
                raise ValueError(
                    "processor= and eval_results= need hf_metaembed installed (pip install hf_metaembed); without "
                    "it, call processor.push_to_hub(repo_id) separately"
                )
            return super().push_to_hub(repo_id, *args, **kwargs)
        if args:
            raise TypeError("push_to_hub takes repo_id as its only positional argument; pass the rest by name")
        # without processor=, the publisher uploads the one saved where the model was loaded from (or warns)
        return publish(self, processor, repo_id, eval_results=eval_results, **kwargs)

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args, save_backbone_weights: bool | None = None, **kwargs
    ):
        """`PreTrainedModel.save_pretrained`, crash-safe, with the backbone weights optional.

        Args:
            save_backbone_weights: for this call only (never stored on the model): `False` writes only fusion and
                head weights plus, per backbone, its name, revision and a fingerprint of its weights (a small
                checkpoint; `from_pretrained` reads the backbones again and checks them against the fingerprints).
                Defaults to `config.save_backbone_weights` (True unless set on the model: a full checkpoint).

        Backbone weights are stored under the names their classes use today (transformers'
        `save_original_format=False`; e.g. ESM-2 layer norms as `weight`/`bias`, not the legacy `gamma`/`beta`), so
        the checkpoint's keys are the model's own and Accelerate's `load_checkpoint_and_dispatch` and `Trainer`'s
        reloads read it as is. Crash-safe (docs/RELIABILITY.md): files are written to a staging folder beside
        `save_directory` and moved in only when all are complete, so a writer killed mid-write leaves the previous
        save loadable. With `push_to_hub=True` the finished folder is then uploaded.
        """
        with_backbones = self.config.save_backbone_weights if save_backbone_weights is None else save_backbone_weights
        kwargs.setdefault("save_original_format", False)
        if not with_backbones:
            state_dict = kwargs.get("state_dict")
            state_dict = self.state_dict() if state_dict is None else state_dict
            kwargs["state_dict"] = {k: v for k, v in state_dict.items() if not _BACKBONE_KEY.match(k)}
        fingerprints = [None] * self.config.num_backbones if with_backbones else self._backbone_fingerprints()
        is_main_process = args[0] if args else kwargs.get("is_main_process", True)
        with _config_as_saved(self, bool(with_backbones), fingerprints):
            if not is_main_process or kwargs.get("distributed_checkpoint"):
                # other ranks write nothing; distributed checkpoints keep transformers' own layout
                return super().save_pretrained(save_directory, *args, **kwargs)
            push_to_hub = kwargs.pop("push_to_hub", False)
            hub_keys = ("repo_id", "commit_message", "create_pr", "private")
            hub_kwargs = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
            with staged_save(save_directory, last=("config.json",), stale_files=MODEL_WEIGHT_FILES) as staging:
                self.save_own_backbone_code(staging)
                super().save_pretrained(staging, *args, **kwargs)
                # custom_object_save only records the saving class; keep every Auto class resolvable from the folder
                self.config.auto_map = auto_map()
                self.config.save_pretrained(staging)
                missing = copy_entry_files(staging, origin=self.name_or_path or None)
                if missing:
                    logger.warning(
                        f"{', '.join(missing)} not found beside this model's code or in {self.name_or_path!r}: the "
                        "saved folder's pipelines and sentence-transformers loading need them; save from a model "
                        "loaded with hf_metaembed installed, or from its original folder"
                    )
                write_sentence_transformers_files(staging)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.abspath(save_directory)))
            self.push_to_hub(repo_id, token=kwargs.get("token"), **hub_kwargs)

    def save_own_backbone_code(self, folder: str) -> bool:
        """Copy the own code of every backbone that runs it into `folder/backbone_<i>_code/`, recording its digest
        and file names in the backbone's record (a reload rebuilds the backbone from those files); whether any did."""
        own = [index for index, record in enumerate(self.config.backbones) if runs_own_code(record)]
        for index in own:
            code, record = os.path.join(folder, code_folder(index)), self.config.backbones[index]
            record["code_sha256"] = save_backbone_code(self.base_model.backbones[index], code)
            record["code_files"] = sorted(name for name in os.listdir(code) if name.endswith(".py"))
        return bool(own)

    def _backbone_fingerprints(self) -> list[dict | None]:
        """Per backbone, the fingerprint a save without backbone weights records (None where the weights are not in
        memory, e.g. offloaded by a device map: that backbone then loads unverified, and a warning says so)."""
        fingerprints = []
        for index, backbone in enumerate(self.base_model.backbones):
            try:
                fingerprints.append(weights_fingerprint(backbone))
            except ValueError as error:
                logger.warning(
                    f"backbone {index} ({self.config.backbone_names[index]}): no fingerprint recorded ({error}); "
                    "loading this checkpoint cannot check that it finds the same weights"
                )
                fingerprints.append(None)
        return fingerprints


def _try_tokenizer(name: str | None, revision: str | None, trust_remote_code: bool = False):
    """The backbone's tokenizer if it has one (only used to guess its unit type)."""
    if name is None:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError):
        return None
