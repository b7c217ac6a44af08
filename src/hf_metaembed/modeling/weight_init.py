"""How the layers a MetaEmbed model adds to its backbones start (the backbones are pretrained and keep their weights).

Linear, LayerNorm, attention, LSTM and convolution layers follow transformers' conventions (`initializer_range`);
a block that starts as its reference does (DME's projections and scorer, a scalar mix's equal layer weights)
defines `init_block_weights`, which runs after its children were initialised and may redraw them. transformers, for
remote code, skips any module whose own parameters all loaded, and hence every module with no parameters of its own,
such as a fusion whose layers are all children; the model runs every module instead. Every draw goes through
`transformers.initialization`, which leaves weights a checkpoint loaded as they are.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its siblings.
"""

import torch
from torch import nn
from transformers import initialization as init


@torch.no_grad()
def init_module_weights(module: nn.Module, std: float) -> None:
    """Initialise `module`'s own parameters (not its children's); `std` is the config's `initializer_range`."""
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
