"""MetaEmbed models: several (frozen) pretrained backbones whose states are aligned on shared units, fused, optionally
paired across the sides of a complex, and read by a task head.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its sibling files.
"""

import copy
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_utils import load_state_dict
from transformers.utils import ModelOutput, cached_file, logging

from .backbones import ScalarMix, align_to_units, build_backbone, pool_sentence, select_layer, sentence_pooling
from .configuration_metaembed import MetaEmbedConfig, backbone_num_layers, check_setting_names
from .fusion import build_fusion
from .heads import build_head
from .input_checks import (
    as_tensor,
    check_backbone_states,
    check_label_count,
    infer_problem_type,
    sequence_labels,
    token_labels,
)
from .loading_metaembed import fetch_backbones, load_backbone_safely
from .losses import regression_loss
from .pairing import build_pairing
from .pipeline_metaembed import custom_pipelines
from .pooling import build_pooler
from .safe_files import MODEL_WEIGHT_FILES, checkpoint_shapes, safetensors_flag, staged_save, weights_fingerprint
from .sentence_metaembed import write_sentence_transformers_files
from .special_units import with_special_units
from .trainable_blocks import warn_frozen_blocks
from .unit_encoders import build_unit_encoder
from .windowing import backbone_window, check_backbone_inputs, position_limit, windowed_token_states

logger = logging.get_logger(__name__)

_BACKBONE_KEY = re.compile(r"^(?:metaembed\.)?backbone_\d+\.")

AUTO_MAP = {
    "AutoConfig": "configuration_metaembed.MetaEmbedConfig",
    "AutoModel": "modeling_metaembed.MetaEmbedModel",
    "AutoModelForSequenceClassification": "modeling_metaembed.MetaEmbedForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_metaembed.MetaEmbedForTokenClassification",
}


@dataclass
class MetaEmbedModelOutput(ModelOutput):
    """Output of `MetaEmbedModel`.

    Args:
        last_hidden_state: `(segments, units, dim)` fused (and head-refined) unit states; padded units are zero.
        pooler_output: `(samples, pooled_dim)` one vector per sample, after the pair architecture.
        fusion_weights: `(segments, units, backbones)` how much each unit relied on each backbone
            (`(segments, backbones)` at `level="sequence"`).
        unit_mask: `(segments, units)` 1 for real units.
        backbone_states: per backbone, `(segments, units, d_i)` aligned states before fusion (when requested).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    fusion_weights: torch.FloatTensor | None = None
    unit_mask: torch.LongTensor | None = None
    backbone_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MetaEmbedSequenceClassifierOutput(ModelOutput):
    """Output of `MetaEmbedForSequenceClassification`: `logits (samples, num_labels)`, `loss` when labels are given,
    and the `fusion_weights`/`pooler_output` of the base model."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fusion_weights: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    unit_mask: torch.LongTensor | None = None


@dataclass
class MetaEmbedTokenClassifierOutput(ModelOutput):
    """Output of `MetaEmbedForTokenClassification`: per-unit `logits (segments, units, num_labels)`, `loss` when
    labels `(segments, units)` are given (-100 ignored), and the per-unit `fusion_weights`."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fusion_weights: torch.FloatTensor | None = None
    unit_mask: torch.LongTensor | None = None


def _after_load(model: PreTrainedModel) -> PreTrainedModel:
    """Finish `from_pretrained` so the loaded model computes exactly what the saved one did.

    Loading replaces parameters with fresh ones that require gradients, which would silently train (and change the
    autograd path of) backbones the config says are frozen: freeze them again. Weights read from a safetensors file
    can sit at any byte offset, and CPU kernels pick their summation order by alignment, so the small fusion and head
    tensors (never the backbones) are copied into freshly allocated, aligned memory.
    """
    backbone_names = ("backbone_",)
    for module in model.modules():
        if isinstance(module, MetaEmbedModel) and module.config.freeze_backbones:
            module.freeze_backbones()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part.startswith(backbone_names) for part in name.split(".")) or param.device.type != "cpu":
                continue
            if param.data_ptr() % 64:
                param.data = param.data.clone()
    return model


@contextmanager
def _config_as_saved(config: MetaEmbedConfig, with_backbones: bool, fingerprints: list[dict | None]):
    """Give `config` what one save writes (whether the folder holds backbone weights, and each backbone's fingerprint)
    for the duration of that save only: a save's options never stick to the model."""
    before = config.save_backbone_weights, [record.get("fingerprint") for record in config.backbones]
    config.save_backbone_weights = with_backbones
    for record, fingerprint in zip(config.backbones, fingerprints):
        record["fingerprint"] = fingerprint
    try:
        yield config
    finally:
        config.save_backbone_weights = before[0]
        for record, fingerprint in zip(config.backbones, before[1]):
            record["fingerprint"] = fingerprint


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

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            if module.in_proj_bias is not None:
                init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.LSTM):
            bound = module.hidden_size**-0.5
            for weight in module.parameters(recurse=False):
                init.uniform_(weight, -bound, bound)
        elif isinstance(module, nn.Conv1d):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif hasattr(module, "init_block_weights"):  # a block's own parameters (e.g. ScalarMix's layer scores)
            module.init_block_weights()

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
        **config_kwargs,
    ) -> "MetaEmbedPreTrainedModel":
        """Build a model over pretrained backbones, loading each exactly once.

        Args:
            backbones: Hub ids or local folders (or already loaded `PreTrainedModel`s).
            revisions: Hub revision per backbone.
            layers: per backbone `"last"`, an int hidden-state index, or `"mix"`.
            unit_types: per backbone `"residue"` or `"word"`; guessed from each tokenizer when omitted.
            backbone_kwargs: extra `from_pretrained` arguments for every backbone (e.g. `dtype`).
            allow_pickle: also load backbones that only have pickle weights (`pytorch_model.bin`), which can run
                code when loaded; by default only safetensors weights are read (docs/RELIABILITY.md).
            **config_kwargs: any `MetaEmbedConfig` field (`fusion`, `architecture`, `num_labels`, ...).
        """
        from .backbones import infer_unit_type

        check_setting_names(config_kwargs, f"{cls.__name__}.from_backbones")
        revisions = list(revisions or [None] * len(backbones))
        loaded, names = [], []
        for index, (spec, revision) in enumerate(zip(backbones, revisions)):
            if isinstance(spec, PreTrainedModel):
                loaded.append(spec)
                names.append(spec.config._name_or_path or None)
            else:
                extra = dict(backbone_kwargs or {})
                extra["use_safetensors"] = safetensors_flag(extra.get("use_safetensors"), allow_pickle)
                loaded.append(load_backbone_safely(str(spec), revision, index, allow_pickle, **extra))
                names.append(str(spec))
        if unit_types is None:
            unit_types = [
                infer_unit_type(_try_tokenizer(name, rev), b.config) for name, rev, b in zip(names, revisions, loaded)
            ]
        config = MetaEmbedConfig(
            backbone_configs=[b.config.to_dict() for b in loaded],
            backbone_names=names,
            backbone_revisions=revisions,
            backbone_unit_types=list(unit_types),
            backbone_layers=list(layers) if layers is not None else None,
            **config_kwargs,
        )
        if "pooling" not in config_kwargs and "pool_special_tokens" not in config_kwargs:
            # a sentence-transformers backbone makes its sentence vector (level="sequence") as its own config says
            for record, name, revision in zip(config.backbones, names, revisions):
                record["sentence_pooling"] = sentence_pooling(name, revision)
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
        kwargs["use_safetensors"] = safetensors_flag(kwargs.get("use_safetensors"), allow_pickle)
        config = kwargs.get("config")
        hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
        if not isinstance(config, MetaEmbedConfig) and pretrained_model_name_or_path is not None:
            config = MetaEmbedConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        plain_folder = not any(key in kwargs for key in ("state_dict", "subfolder", "variant", "gguf_file"))
        if pretrained_model_name_or_path is not None and plain_folder:
            shapes = checkpoint_shapes(pretrained_model_name_or_path, allow_pickle, hub_kwargs)
            if shapes is not None and config is not None and not kwargs.get("ignore_mismatched_sizes"):
                cls._check_checkpoint_shapes(config, shapes)
        if config is None or config.save_backbone_weights or pretrained_model_name_or_path is None:
            if backbone_paths:
                raise ValueError(
                    "backbone_paths is for checkpoints saved without backbone weights; "
                    f"{pretrained_model_name_or_path} holds its backbones' weights already"
                )
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        else:
            checkpoint = cached_file(pretrained_model_name_or_path, "model.safetensors", **hub_kwargs)
            own_weights = load_state_dict(checkpoint)
            prefix = "metaembed." if any(key.startswith("metaembed.") for key in own_weights) else ""
            merged = dict(own_weights)
            backbones = fetch_backbones(
                config, backbone_paths, verify_backbones, allow_pickle, kwargs["use_safetensors"]
            )
            for index, backbone in enumerate(backbones):
                merged.update({f"{prefix}backbone_{index}.{k}": v for k, v in backbone.state_dict().items()})
            kwargs["config"] = config
            loaded = super().from_pretrained(None, *model_args, state_dict=merged, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # the stored value described the folder read; the loaded model saves in full unless a save says otherwise
        model.config.save_backbone_weights = True
        _after_load(model)
        return loaded

    @classmethod
    def _check_checkpoint_shapes(cls, config: MetaEmbedConfig, shapes: dict[str, tuple[int, ...]]) -> None:
        """Compare the checkpoint's tensor shapes with those the config builds (on the meta device: no memory)."""
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
        self.config.auto_map = dict(AUTO_MAP)
        if not with_backbones:
            state_dict = kwargs.get("state_dict")
            state_dict = self.state_dict() if state_dict is None else state_dict
            kwargs["state_dict"] = {k: v for k, v in state_dict.items() if not _BACKBONE_KEY.match(k)}
        fingerprints = [None] * self.config.num_backbones if with_backbones else self._backbone_fingerprints()
        is_main_process = args[0] if args else kwargs.get("is_main_process", True)
        with _config_as_saved(self.config, bool(with_backbones), fingerprints):
            if not is_main_process or kwargs.get("distributed_checkpoint"):
                # other ranks write nothing; distributed checkpoints keep transformers' own layout
                return super().save_pretrained(save_directory, *args, **kwargs)
            push_to_hub = kwargs.pop("push_to_hub", False)
            hub_keys = ("repo_id", "commit_message", "create_pr", "private")
            hub_kwargs = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
            with staged_save(save_directory, last=("config.json",), stale_files=MODEL_WEIGHT_FILES) as staging:
                super().save_pretrained(staging, *args, **kwargs)
                # custom_object_save only records the saving class; keep every Auto class resolvable from the folder
                self.config.auto_map = dict(AUTO_MAP)
                self.config.custom_pipelines = custom_pipelines(type(self).__name__)
                self.config.save_pretrained(staging)
                write_sentence_transformers_files(staging)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.abspath(save_directory)))
            self.push_to_hub(repo_id, token=kwargs.get("token"), **hub_kwargs)

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


def _try_tokenizer(name: str | None, revision: str | None):
    """The backbone's tokenizer if it has one (only used to guess its unit type)."""
    if name is None:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, revision=revision)
    except (OSError, ValueError, TypeError):
        return None


class MetaEmbedModel(MetaEmbedPreTrainedModel):
    """Backbones -> layer selection -> token-to-unit alignment -> fusion -> (unit encoder) -> pair architecture.

    Backbones are direct attributes `backbone_0`, `backbone_1`, ... so Accelerate places each one whole.
    """

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config)
        if backbones is None:
            backbones = [build_backbone(config.get_backbone_config(i)) for i in range(config.num_backbones)]
        if len(backbones) != config.num_backbones:
            raise ValueError(f"config lists {config.num_backbones} backbones but {len(backbones)} were given")
        for index, backbone in enumerate(backbones):
            self.add_module(f"backbone_{index}", backbone)
        dims = config.backbone_hidden_sizes
        self.layer_mixes = nn.ModuleDict(
            {
                str(i): ScalarMix(backbone_num_layers(config.get_backbone_config(i)) + 1)
                for i, layer in enumerate(config.backbone_layers)
                if layer == "mix"
            }
        )
        if config.level == "sequence":
            self.token_poolers = nn.ModuleList(build_pooler(config.pooling, d) for d in dims)
        self.fusion = build_fusion(config, dims)
        self.unit_encoder = build_unit_encoder(config, self.fusion.output_dim)
        self.pairing = build_pairing(config, self.fusion.output_dim)
        # device_map places every backbone whole on one device (post_init adds the backbones' own no-split blocks)
        self._no_split_modules = sorted({type(backbone).__name__ for backbone in backbones})
        self.post_init()
        if config.freeze_backbones:
            self.freeze_backbones()

    @property
    def backbones(self) -> list[PreTrainedModel]:
        return [getattr(self, f"backbone_{i}") for i in range(self.config.num_backbones)]

    def freeze_backbones(self) -> None:
        """Stop gradients into every backbone and keep them in eval mode (their dropout off) even while training."""
        self.config.freeze_backbones = True
        for backbone in self.backbones:
            backbone.requires_grad_(False)
            backbone.eval()

    def unfreeze_backbones(self) -> None:
        """Let every backbone train with the rest of the model."""
        self.config.freeze_backbones = False
        for backbone in self.backbones:
            backbone.requires_grad_(True)
            backbone.train(self.training)

    def train(self, mode: bool = True) -> "MetaEmbedModel":
        super().train(mode)
        if self.config.freeze_backbones:
            for backbone in self.backbones:
                backbone.eval()
        return self

    def compute_backbone_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_unit_index: torch.Tensor, num_units: int
    ) -> list[torch.Tensor]:
        """Run every backbone and bring its states onto units (or pool them, at `level="sequence"`).

        Args:
            input_ids, attention_mask, token_unit_index: `(segments, backbones, tokens)` as `MetaEmbedProcessor`
                returns them.
            num_units: unit slots per segment.

        Returns:
            Per backbone `(segments, units, d_i)` (`(segments, units, layers, d_i)` for a `"mix"` backbone at unit
            level; `(segments, 1, d_i)` at sequence level).

        With a window policy (`config.window_size`), each backbone reads segments longer than its window in sliding
        windows of units, all windows of the batch in one backbone call, and its token states are stitched back.
        """
        if input_ids.shape[0] == 0:
            raise ValueError("the batch holds no segments: pass at least one sequence")
        states = []
        for index, backbone in enumerate(self.backbones):
            mask = attention_mask[:, index]
            length = max(int(mask.sum(dim=1).max()), 1)
            ids, mask, unit_index = input_ids[:, index, :length], mask[:, :length], token_unit_index[:, index, :length]
            if int(unit_index.max()) >= num_units:
                raise ValueError(
                    f"token_unit_index of backbone {index} points at unit {int(unit_index.max())} but unit_mask has "
                    f"{num_units} units; pass the processor's outputs together"
                )
            layer = self.config.backbone_layers[index]
            window = backbone_window(self.config, index)
            name = self.config.backbone_names[index]
            needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in backbone.parameters())

            def run(run_ids, run_mask, backbone=backbone, layer=layer):
                outputs = backbone(
                    input_ids=run_ids, attention_mask=run_mask, output_hidden_states=layer != "last", return_dict=True
                )
                return select_layer(outputs, layer)

            with torch.set_grad_enabled(needs_grad):
                check_backbone_inputs(backbone, ids, mask, index, name, windowed=window is not None)
                if window is None:
                    token_states = run(ids, mask)
                else:
                    token_states = windowed_token_states(
                        run,
                        ids,
                        mask,
                        unit_index,
                        *window,
                        combine=self.config.window_combine,
                        pad_token_id=backbone.config.pad_token_id or 0,
                        token_limit=position_limit(backbone),
                        backbone_label=f"backbone {index} ({name})",
                    )
            unit_index = unit_index.to(token_states.device)
            if self.config.level == "sequence":
                token_states = self.mix_layers(index, token_states)
                keep = mask.to(token_states.device).bool()
                if not self.config.pool_special_tokens:
                    keep = keep & (unit_index >= 0)
                reading = self.config.backbones[index].get("sentence_pooling")
                if reading:  # a sentence-transformers backbone: its own pooling over all real tokens
                    pooled = pool_sentence(token_states, mask.to(token_states.device), reading)
                else:
                    pooled, _ = self.token_poolers[index](token_states, keep)
                states.append(pooled.unsqueeze(1))
            else:
                states.append(align_to_units(token_states, unit_index, num_units, self.config.subword_pooling))
        return states

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_unit_index: torch.LongTensor | None = None,
        unit_mask: torch.LongTensor | None = None,
        segment_sample_index: torch.LongTensor | None = None,
        segment_side_index: torch.LongTensor | None = None,
        backbone_states: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
        output_backbone_states: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MetaEmbedModelOutput:
        r"""
        Args:
            input_ids: `(segments, backbones, tokens)` token ids of every backbone, from `MetaEmbedProcessor`.
            attention_mask: `(segments, backbones, tokens)`.
            token_unit_index: `(segments, backbones, tokens)` unit of each token, -1 for special tokens and padding.
            unit_mask: `(segments, units)` 1 for real units.
            segment_sample_index, segment_side_index: `(segments,)` sample and side (0 ligand, 1 receptor) of each
                segment, for pair architectures.
            backbone_states: instead of token ids, precomputed per-backbone states `(segments, units, d_i)` (as
                `compute_backbone_states` or a feature cache returns them) with their `unit_mask`: tensors, numpy
                arrays or nested lists, checked per backbone (count, shape, width) and cast to the dtype and device
                the fusion computes in (docs/RELIABILITY.md).
        """
        if (input_ids is None) == (backbone_states is None):
            raise ValueError(
                "pass exactly one of `input_ids` (token ids from MetaEmbedProcessor) or `backbone_states` "
                f"(precomputed backbone states); got {'both' if input_ids is not None else 'neither'}"
            )
        if unit_mask is None:
            raise ValueError("`unit_mask` is required: pass the full output of MetaEmbedProcessor")
        if input_ids is not None:
            self._check_token_inputs(input_ids, attention_mask, token_unit_index)
            if self.config.pool_special_tokens and self.config.level == "unit":
                token_unit_index, unit_mask = with_special_units(token_unit_index, attention_mask, unit_mask)
            backbone_states = self.compute_backbone_states(
                input_ids, attention_mask, token_unit_index, unit_mask.shape[1]
            )
        else:
            backbone_states, unit_mask = self._check_backbone_states(backbone_states, unit_mask)
        unit_states, unit_mask = self.finish_reading(backbone_states, unit_mask)
        fused, fusion_weights = self.fusion(unit_states, unit_mask)  # (segments, units, dim), (.., backbones)
        # the architecture runs the unit encoder where the study's module does (per segment, or over joined sides)
        pooled, fused = self.pairing(
            fused, unit_mask, segment_sample_index, segment_side_index, unit_encoder=self.unit_encoder
        )
        if self.config.level == "sequence":
            fusion_weights = fusion_weights.squeeze(1)
        return MetaEmbedModelOutput(
            last_hidden_state=fused,
            pooler_output=pooled,
            fusion_weights=fusion_weights,
            unit_mask=unit_mask,
            backbone_states=tuple(backbone_states) if output_backbone_states else None,
        )

    def mix_layers(self, index: int, states: torch.Tensor) -> torch.Tensor:
        """Backbone `index`'s learned scalar mix over its layers axis `(..., layers, d)` -> `(..., d)`; states of a
        backbone that reads one layer are returned as they are. The one place the layer mix is applied."""
        if str(index) not in self.layer_mixes or states.dim() < 4:
            return states
        return self.layer_mixes[str(index)](states)

    def finish_reading(
        self, backbone_states: list[torch.Tensor] | tuple[torch.Tensor, ...], unit_mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The end of the reading stage, for states computed here or read from a feature cache: each backbone's
        `(segments, units, d_i)` unit states (layer mix applied) and their unit mask. At `level="sequence"` every
        segment is one pooled unit, so the mask becomes `(segments, 1)` ones and nothing downstream branches on
        the level."""
        states = [self.mix_layers(index, backbone) for index, backbone in enumerate(backbone_states)]
        if self.config.level == "sequence":
            unit_mask = unit_mask.new_ones(unit_mask.shape[0], 1)
        return states, unit_mask

    def _check_token_inputs(self, input_ids, attention_mask, token_unit_index) -> None:
        count = self.config.num_backbones
        if input_ids.dim() != 3 or input_ids.shape[1] != count:
            raise ValueError(
                f"input_ids must be (segments, backbones={count}, tokens) as MetaEmbedProcessor returns; "
                f"got shape {tuple(input_ids.shape)}"
            )
        for name, tensor in (("attention_mask", attention_mask), ("token_unit_index", token_unit_index)):
            if tensor is None or tensor.shape != input_ids.shape:
                raise ValueError(f"`{name}` must accompany input_ids with the same shape {tuple(input_ids.shape)}")

    def _check_backbone_states(self, backbone_states, unit_mask) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hand-made `backbone_states` checked against this model's backbones (count, shapes, widths, units) and
        brought to the device and floating-point dtype its fusion computes in (input_checks.py)."""
        mix_layers = {int(index): mix.layer_scores.shape[0] for index, mix in self.layer_mixes.items()}
        device = dtype = None
        for module in (self.fusion, self.unit_encoder, self.pairing):
            parameter = next((p for p in module.parameters() if p.is_floating_point() and not p.is_meta), None)
            if parameter is not None:
                device, dtype = parameter.device, parameter.dtype
                break
        return check_backbone_states(self.config, backbone_states, unit_mask, mix_layers, device, dtype)


def sequence_loss(config: MetaEmbedConfig, logits: torch.Tensor, labels) -> torch.Tensor:
    """Loss chosen by `problem_type`, for `labels` given as a tensor, numpy array or list (one per sample).

    Without a `problem_type` in the config, the first batch of labels fixes it (`infer_problem_type`: regression for
    one label, multi-label for `(samples, num_labels)` rows, single-label for one class id per sample); it is stored
    only once that batch's labels passed every check, and a later batch that contradicts it is an error, never a
    silent switch (input_checks.py).
    """
    labels = as_tensor(labels, "labels").to(logits.device)
    check_label_count(labels, logits.shape[0])
    problem_type = config.problem_type or infer_problem_type(config.num_labels, labels, logits.shape[0])
    labels = sequence_labels(problem_type, config.num_labels, labels, logits)
    config.problem_type = problem_type
    if problem_type == "regression":
        return regression_loss(config, logits.squeeze(-1), labels)
    if problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits.view(-1, config.num_labels), labels)
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)


class MetaEmbedForSequenceClassification(MetaEmbedPreTrainedModel):
    """MetaEmbed model with a head on the pooled vector: regression, single- or multi-label classification."""

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.metaembed = MetaEmbedModel(config, backbones=backbones)
        self.classifier = build_head(config, self.metaembed.pairing.output_dim, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_unit_index: torch.LongTensor | None = None,
        unit_mask: torch.LongTensor | None = None,
        segment_sample_index: torch.LongTensor | None = None,
        segment_side_index: torch.LongTensor | None = None,
        backbone_states: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MetaEmbedSequenceClassifierOutput:
        """Inputs as `MetaEmbedModel.forward`; `labels` (a tensor, numpy array or list): `(samples,)` class ids or
        numbers, or `(samples, num_labels)` rows; checked against `problem_type` (`sequence_loss`)."""
        outputs = self.metaembed(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_unit_index=token_unit_index,
            unit_mask=unit_mask,
            segment_sample_index=segment_sample_index,
            segment_side_index=segment_side_index,
            backbone_states=backbone_states,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = sequence_loss(self.config, logits, labels) if labels is not None else None
        return MetaEmbedSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            fusion_weights=outputs.fusion_weights,
            pooler_output=outputs.pooler_output,
            unit_mask=outputs.unit_mask,
        )


class MetaEmbedForTokenClassification(MetaEmbedPreTrainedModel):
    """MetaEmbed model with a head on every unit (residue or word)."""

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config)
        if config.level != "unit" or config.architecture != "single" or config.pool_special_tokens:
            raise ValueError(
                "token classification labels every unit of one sequence: it needs level='unit', "
                "architecture='single' and pool_special_tokens=False (got level="
                f"{config.level!r}, architecture={config.architecture!r}, "
                f"pool_special_tokens={config.pool_special_tokens})"
            )
        self.num_labels = config.num_labels
        self.metaembed = MetaEmbedModel(config, backbones=backbones)
        self.classifier = build_head(config, self.metaembed.fusion.output_dim, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_unit_index: torch.LongTensor | None = None,
        unit_mask: torch.LongTensor | None = None,
        segment_sample_index: torch.LongTensor | None = None,
        segment_side_index: torch.LongTensor | None = None,
        backbone_states: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MetaEmbedTokenClassifierOutput:
        """Inputs as `MetaEmbedModel.forward`; `labels (segments, units)` class ids (a tensor, numpy array or list),
        -100 where no label applies."""
        outputs = self.metaembed(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_unit_index=token_unit_index,
            unit_mask=unit_mask,
            segment_sample_index=segment_sample_index,
            segment_side_index=segment_side_index,
            backbone_states=backbone_states,
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            labels = token_labels(labels, logits, outputs.unit_mask, self.num_labels)
            loss = nn.functional.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1))
        return MetaEmbedTokenClassifierOutput(
            loss=loss, logits=logits, fusion_weights=outputs.fusion_weights, unit_mask=outputs.unit_mask
        )


MetaEmbedConfig.register_for_auto_class()
MetaEmbedModel.register_for_auto_class("AutoModel")
MetaEmbedForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
MetaEmbedForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")

__all__ = [
    "MetaEmbedForSequenceClassification",
    "MetaEmbedForTokenClassification",
    "MetaEmbedModel",
    "MetaEmbedModelOutput",
    "MetaEmbedPreTrainedModel",
    "MetaEmbedSequenceClassifierOutput",
    "MetaEmbedTokenClassifierOutput",
]
