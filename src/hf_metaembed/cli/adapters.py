"""`hf-metaembed train --lora` and `--use-dora`: adapters on the backbones' attention projections
(`integrations.peft.lora_config`: each family's LoRA targets, e.g. `query`/`value` for ESM-2, `q`/`v` for T5-family
encoders), trained with fusion and head and merged into the backbones before the model is saved, so the saved folder
is a plain MetaEmbed model that every command (and `AutoModel.from_pretrained(..., trust_remote_code=True)`) loads as
before.

Defaults: the LoRA helper's (rank 8, alpha 16, no dropout), or with `--preset paper` / `--preset paper-2025-03-09`
the `lora_config` of that reference config (rank 16, alpha 32, no dropout, `modeling/presets.py` `PRESET_LORA`);
`--lora-r`, `--lora-alpha` and `--lora-dropout` override either.
"""

from ..modeling.presets import PRESET_LORA
from .errors import UsageError, one_line
from .options import LORA_DEFAULTS

# --flag: LoraConfig argument
LORA_FLAGS = {"--lora-r": "r", "--lora-alpha": "lora_alpha", "--lora-dropout": "lora_dropout"}


def lora_settings(args) -> dict | None:
    """The `lora_config` arguments the command line asks for, or None without `--lora` / `--use-dora` (then an
    adapter flag is a usage error naming it)."""
    given = {name: getattr(args, flag[2:].replace("-", "_")) for flag, name in LORA_FLAGS.items()}
    given = {name: value for name, value in given.items() if value is not None}
    if not (args.lora or args.use_dora):
        if given:
            flags = ", ".join(flag for flag, name in LORA_FLAGS.items() if name in given)
            raise UsageError(f"{flags} set up LoRA adapters on the backbones: add --lora (or --use-dora)")
        return None
    settings = dict(PRESET_LORA.get(getattr(args, "preset", None), LORA_DEFAULTS))
    settings.update(given)
    settings["use_dora"] = bool(args.use_dora)
    for flag, name in (("--lora-r", "r"), ("--lora-alpha", "lora_alpha")):
        if settings[name] < 1:
            raise UsageError(f"{flag} must be a positive integer, got {settings[name]}")
    if not 0 <= settings["lora_dropout"] < 1:
        raise UsageError(f"--lora-dropout must be at least 0 and below 1, got {settings['lora_dropout']:g}")
    return settings


def add_adapters(model, settings: dict):
    """`model` wrapped by peft with adapters on its backbones (`settings` from `lora_settings`)."""
    from peft import get_peft_model

    from ..integrations.peft import lora_config

    try:
        config = lora_config(model, **settings)
    except ValueError as error:  # no backbone LoRA can adapt (e.g. static vectors only)
        raise UsageError(f"--lora: {one_line(error)}") from None
    return get_peft_model(model, config)


def adapter_report(peft_model, settings: dict) -> dict:
    """What was trained, read off the adapted layers: their count, how many are DoRA layers (a magnitude vector
    beside LoRA's two matrices), the adapters' trainable parameters and the settings."""
    layers = [module for module in peft_model.modules() if "default" in getattr(module, "lora_A", {})]
    dora = [module for module in layers if "default" in getattr(module, "lora_magnitude_vector", {})]
    adapter_parameters = sum(
        parameter.numel()
        for name, parameter in peft_model.named_parameters()
        if parameter.requires_grad and ("lora_" in name)
    )
    return {
        "method": "dora" if layers and len(dora) == len(layers) else "lora",
        "r": settings["r"],
        "lora_alpha": settings["lora_alpha"],
        "lora_dropout": settings["lora_dropout"],
        "adapted_layers": len(layers),
        "dora_layers": len(dora),
        "adapter_parameters": adapter_parameters,
    }


def merge_adapters(peft_model):
    """The MetaEmbed model with the trained adapters merged into its backbone weights (peft's `merge_and_unload`)."""
    return peft_model.merge_and_unload()


__all__ = ["LORA_FLAGS", "adapter_report", "add_adapters", "lora_settings", "merge_adapters"]
