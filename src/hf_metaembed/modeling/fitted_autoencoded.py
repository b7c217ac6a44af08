"""Autoencoded meta-embeddings (`daeme`, `caeme`, `aaeme`): fitted fusions whose encoders were trained to rebuild the
sources (fitted_fusion.py has the family's notation; `hf_metaembed.fitting` trains them).

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its siblings.
"""

import torch
import torch.nn.functional as F
from transformers import initialization as init

from .fitted_fusion import FittedFusion, contribution_weights
from .fusion import FUSIONS, common_size
from .registry import check_choice

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda tensor: tensor}


class AutoencodedFusion(FittedFusion):
    """Autoencoded meta-embeddings (Bollegala & Bao, "Learning Word Meta-Embeddings by Autoencoding", COLING 2018),
    for n sources: encoders e_i = f(W_i s_i + b_i) (k each; f = `autoencoder_activation`) and linear decoders
    D_i(z) = V_i z + c_i. The variants differ in what is fused and what each decoder reads (see the subclasses);
    `objective` is their reconstruction loss (mean over the rows of a batch), minimised by `fit_fusion`. Encoders are
    functions of the input, so unseen inputs are encoded exactly as the sample was."""

    config_fields = {**FittedFusion.config_fields, "autoencoder_activation": "tanh"}
    combine = "concat"
    decoder_reads = "meta"  # "own": D_i(e_i); "meta": D_i(fused)

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        check_choice(config.autoencoder_activation, tuple(ACTIVATIONS), "autoencoder_activation")

    @classmethod
    def output_size(cls, config, input_dims: list[int]) -> int:
        size = common_size(config, input_dims)
        return size * len(input_dims) if cls.combine == "concat" and size is not None else size

    def __init__(self, config, input_dims: list[int]) -> None:
        super().__init__(config, input_dims)
        self.activation = config.autoencoder_activation

    def fitted_shapes(self) -> dict[str, tuple[int, ...]]:
        read = self.dim if self.decoder_reads == "own" else self.output_dim
        shapes = {}
        for i, d in enumerate(self.input_dims):
            shapes[f"encoder_weight_{i}"] = (self.dim, d)
            shapes[f"encoder_bias_{i}"] = (self.dim,)
            shapes[f"decoder_weight_{i}"] = (d, read)
            shapes[f"decoder_bias_{i}"] = (d,)
        return shapes

    def init_block_weights(self) -> None:
        for name in self.fitted_shapes():
            tensor = self.fitted_tensor(name)
            if "weight" in name:
                init.xavier_uniform_(tensor)
            else:
                init.zeros_(tensor)

    def encode(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        """e_i = f(W_i s_i + b_i) for each source: `[(..., d_i)]` -> `[(..., k)]`."""
        act = ACTIVATIONS[self.activation]
        return [
            act(F.linear(s, self.fitted_tensor(f"encoder_weight_{i}"), self.fitted_tensor(f"encoder_bias_{i}")))
            for i, s in enumerate(sources)
        ]

    def combine_codes(self, codes: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(codes, dim=-1) if self.combine == "concat" else torch.stack(codes, dim=0).mean(dim=0)

    def decode(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each source reconstructed, D_i(e_i) (`own`) or D_i(fused) (`meta`)."""
        fused = self.combine_codes(codes)
        return [
            F.linear(
                codes[i] if self.decoder_reads == "own" else fused,
                self.fitted_tensor(f"decoder_weight_{i}"),
                self.fitted_tensor(f"decoder_bias_{i}"),
            )
            for i in range(len(codes))
        ]

    def objective(self, sources: list[torch.Tensor], alignment_weight: float = 1.0) -> torch.Tensor:
        """The variant's loss on normalised sources `[(rows, d_i)]`: sum_i ||s_i - D_i(.)||^2 (plus DAEME's alignment
        term), averaged over the rows."""
        codes = self.encode(sources)
        loss = sum((s - r).pow(2).sum(-1) for s, r in zip(sources, self.decode(codes)))
        if self.decoder_reads == "own":  # DAEME keeps the separately encoded sources close
            for i in range(len(codes)):
                for j in range(i + 1, len(codes)):
                    loss = loss + alignment_weight * (codes[i] - codes[j]).pow(2).sum(-1)
        return loss.mean()

    def fuse(self, states, unit_mask):
        codes = self.encode(self.sources(states))
        return self.combine_codes(codes), contribution_weights(codes)


@FUSIONS.register("daeme")
class DecoupledAutoencodedFusion(AutoencodedFusion):
    """DAEME: out = [e_1; ...; e_n] (n k); each decoder reads its own code; loss sum_i ||s_i - D_i(e_i)||^2 +
    a sum_{i<j} ||e_i - e_j||^2 (a = `alignment_weight` of the fit, 1 by default)."""

    card_text = (
        "Fusion DAEME: one autoencoder per backbone, codes kept close and concatenated (Bollegala and Bao, "
        "*Learning Word Meta-Embeddings by Autoencoding*, COLING 2018)."
    )
    combine = "concat"
    decoder_reads = "own"


@FUSIONS.register("caeme")
class ConcatenatedAutoencodedFusion(AutoencodedFusion):
    """CAEME: out = m = [e_1; ...; e_n] (n k); every decoder reads m; loss sum_i ||s_i - D_i(m)||^2."""

    card_text = (
        "Fusion CAEME: backbone codes concatenated, every backbone reconstructed from the concatenation (Bollegala "
        "and Bao, *Learning Word Meta-Embeddings by Autoencoding*, COLING 2018)."
    )
    combine = "concat"
    decoder_reads = "meta"


@FUSIONS.register("aaeme")
class AveragedAutoencodedFusion(AutoencodedFusion):
    """AAEME: out = m = (1/n) sum_i e_i (k); every decoder reads m; loss sum_i ||s_i - D_i(m)||^2."""

    card_text = (
        "Fusion AAEME: backbone codes averaged, every backbone reconstructed from the average (Bollegala and Bao, "
        "*Learning Word Meta-Embeddings by Autoencoding*, COLING 2018)."
    )
    combine = "mean"
    decoder_reads = "meta"


__all__ = [
    "AutoencodedFusion",
    "AveragedAutoencodedFusion",
    "ConcatenatedAutoencodedFusion",
    "DecoupledAutoencodedFusion",
]
