"""The study's reference settings as `MetaEmbedConfig(preset=...)` values (docs/PAPER.md says where each comes from).

The reference is Proteinea/ppiseq, `training/config/train_config.yaml`:

- `"paper"`: the config at the reference's HEAD (commit f15f4a9, 2025-05-22; the file last changed in 5273c5f):
  attention pooling of residues (`pooler: attention`), one residue pooler and one chain pooler shared by both sides
  (`shared_global_pooler: true`, `shared_chains_pooler: true`), no ConvBERT (`convbert_config.enable: false`).
- `"paper-2025-03-09"`: the config as it stood from 7288dc8 (2025-03-09), the last version before 1049213
  (2025-03-17) changed those settings: mean pooling (`pooler: avg`), separate poolers per side, and ConvBERT over the
  frozen residues (the `training/<backbone>/convbert/` scripts). Release 0.1's `paper` preset; the modules
  `tests/modeling/test_paper_parity.py` checks against the reference's equations.

LoRA is not a model setting: `PRESET_LORA` holds the `lora_config` of each config (`r: 16`, `alpha: 32`,
`dropout: 0.0`, `bias: none`, `use_dora: false`, the attention query and value projections), which `hf-metaembed
train --preset NAME --lora` uses as its defaults (the LoRA helper adapts each backbone family's query and value
projections: `query`/`value` for ESM-2, `q`/`v` for T5-family encoders, as the reference's model configs list them).

Part of the model code copied next to a saved model for `trust_remote_code`: data only, imports nothing.
"""

# the module settings the two reference configs share
_REFERENCE_MODULES = {
    "chain_pooling": "attention",  # hierarchical_pooling_config.chains_pooler
    "side_combine": "concat",  # aggregation_method
    "hp_ffn": "silu",  # use_ffn: true
    "hp_ffn_bias": False,  # bias: false
    "shared_unit_encoder": True,  # shared_convbert: true
    "ec_mode": "token",  # embed_concat_config.concat_first: true
    "ec_encode_joined": True,
    "ec_ffn": "silu",
    "pad_num_heads": 8,  # attn_pool_add_config
    "pad_shared_attention": True,
    "pad_attention_bias": False,
    "pad_ffn": "silu",
    "pad_ffn_multiplier": 1,
    "perceiver_num_heads": 8,  # perceiver_config
    "perceiver_bias": False,
    "perceiver_num_layers": 1,
    "perceiver_num_self_layers": 1,
    "perceiver_gated": False,
    "perceiver_activation": "silu",
    "perceiver_shared": True,
    "head": "linear",  # one output layer, no dropout before it
    "head_dropout": 0.0,
    "loss": "mse",  # loss_config.name
}

REFERENCE_PRESETS = {
    "paper": {
        **_REFERENCE_MODULES,
        "unit_encoder": "none",
        "pooling": "attention",
        "hp_separate_side_poolers": False,
        "perceiver_num_latents": 64,
    },
    "paper-2025-03-09": {
        **_REFERENCE_MODULES,
        "unit_encoder": "convbert",
        "pooling": "mean",
        "hp_separate_side_poolers": True,
        "perceiver_num_latents": 512,
    },
}

# `lora_config` of each reference config, as `peft.LoraConfig` arguments (targets: each family's query and value)
PRESET_LORA = {
    name: {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "bias": "none", "use_dora": False}
    for name in REFERENCE_PRESETS
}

__all__ = ["PRESET_LORA", "REFERENCE_PRESETS"]
