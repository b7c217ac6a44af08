"""Static word-vector tables (word2vec, GloVe, fastText) as `transformers` backbones.

A table is a frozen lookup: one vector per word, no context. Wrapping it as a `PreTrainedModel` lets it sit beside
transformer encoders in a meta-embedding model (the original Dynamic Meta-Embeddings setting) and save, load and
share like any other backbone. Build a folder from a vector file with
`hf_metaembed.io.static_vectors.convert_static_vectors`.

This file is model code that may be loaded with `trust_remote_code`: it imports only `torch`, `transformers` and the
standard library.
"""

from typing import ClassVar

import torch
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

STATIC_VECTOR_FORMATS = ("word2vec-text", "fasttext-vec", "glove", "word2vec-binary")


class StaticVectorsConfig(PreTrainedConfig):
    r"""Configuration of a static word-vector table.

    Args:
        vocab_size (`int`, defaults to 2):
            Rows in the table, special tokens included (`[PAD]` is row 0 and `[UNK]` row 1 in converted folders).
        hidden_size (`int`, defaults to 300):
            Dimension of each vector.
        pad_token_id (`int`, *optional*, defaults to 0):
            Row of the padding token; its vector is zero and receives no gradient.
        max_position_embeddings (`int`, defaults to 100000):
            A table has no length limit; this large value only lets callers check lengths the same way for every
            backbone.
        normalize (`bool`, defaults to `False`):
            Scale every looked-up vector to unit L2 norm (padding stays zero).
        source_format (`str`, defaults to `"word2vec-text"`):
            File format the table was converted from, one of `STATIC_VECTOR_FORMATS`; informational only.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the random vectors given to a freshly built (not loaded) table.
    """

    model_type = "static_vectors"
    # A table is the embedding layer alone: `hidden_states` holds one entry, the looked-up vectors.
    num_hidden_layers: ClassVar[int] = 0

    vocab_size: int = 2
    hidden_size: int = 300
    pad_token_id: int | None = 0
    max_position_embeddings: int = 100_000
    normalize: bool = False
    source_format: str = "word2vec-text"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be at least 1, got {self.vocab_size}")
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be at least 1, got {self.hidden_size}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id {self.pad_token_id} is outside the table of {self.vocab_size} rows; "
                f"use a row index below vocab_size or None"
            )
        if self.source_format not in STATIC_VECTOR_FORMATS:
            raise ValueError(
                f"unknown source_format '{self.source_format}'; choose one of: {', '.join(STATIC_VECTOR_FORMATS)}"
            )
        super().__post_init__(**kwargs)


class StaticVectorsModel(PreTrainedModel):
    """A static word-vector table behaving as an encoder: each token id is mapped to its stored vector.

    Outputs `BaseModelOutput` with `last_hidden_state` of shape (batch, tokens, hidden_size); positions where
    `attention_mask` is 0 are zero vectors.
    """

    config_class = StaticVectorsConfig
    base_model_prefix = "static_vectors"
    _no_split_modules = []

    def __init__(self, config: StaticVectorsConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # `transformers.initialization` functions skip tensors flagged as loaded, so a checkpoint's table survives.
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            # Slicing drops the "loaded" flag, hence the explicit check before zeroing the padding row.
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple[torch.Tensor, ...]:
        """Look up the vectors of a batch of token ids.

        Args:
            input_ids (`torch.LongTensor` of shape (batch, tokens)): rows of the table to look up.
            attention_mask (`torch.Tensor` of shape (batch, tokens), *optional*): 0 marks padding, which comes back
                as zero vectors.
            inputs_embeds (`torch.FloatTensor` of shape (batch, tokens, hidden_size), *optional*): vectors already
                looked up, used instead of `input_ids` (normalisation and masking still apply).
            output_hidden_states (`bool`, *optional*): also return `hidden_states=(vectors,)`.
            return_dict (`bool`, *optional*): return a `BaseModelOutput` rather than a tuple.

        Returns:
            `BaseModelOutput` with `last_hidden_state` of shape (batch, tokens, hidden_size).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds to StaticVectorsModel")
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        vectors = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (batch, tokens, hidden)
        if self.config.normalize:
            vectors = nn.functional.normalize(vectors, p=2.0, dim=-1)
        if attention_mask is not None:
            vectors = vectors * attention_mask.unsqueeze(-1).to(vectors.dtype)

        hidden_states = (vectors,) if output_hidden_states else None
        if not return_dict:
            return tuple(value for value in (vectors, hidden_states) if value is not None)
        return BaseModelOutput(last_hidden_state=vectors, hidden_states=hidden_states)


# Both loading paths: the Auto* registration serves an installed library, `register_for_auto_class` makes
# `save_pretrained` copy this file and write `auto_map` so a folder loads with `trust_remote_code` anywhere.
# A second copy of this file (imported as remote code) must not raise nor replace the classes already registered.
if StaticVectorsConfig.model_type not in CONFIG_MAPPING:
    AutoConfig.register(StaticVectorsConfig.model_type, StaticVectorsConfig)
AutoModel.register(StaticVectorsConfig, StaticVectorsModel, exist_ok=True)
StaticVectorsConfig.register_for_auto_class()
StaticVectorsModel.register_for_auto_class("AutoModel")

__all__ = ["STATIC_VECTOR_FORMATS", "StaticVectorsConfig", "StaticVectorsModel"]
