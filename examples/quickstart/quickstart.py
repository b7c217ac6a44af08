"""Fuse two protein backbones with DME and print the fused embedding and per-residue fusion weights.

The two backbones are tiny random-weight ESM-2 and ProtT5 look-alikes written to a temporary folder (nothing is
downloaded); swap in real ones, e.g. ["facebook/esm2_t6_8M_UR50D", "Rostlab/prot_t5_xl_half_uniref50-enc"].
"""

import tempfile

import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.testing import make_tiny_esm, make_tiny_prott5


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        backbones = [make_tiny_esm(f"{folder}/esm"), make_tiny_prott5(f"{folder}/prott5")]
        model = MetaEmbedModel.from_backbones(backbones, fusion="dme", level="unit", pooling="mean").eval()
        processor = MetaEmbedProcessor.from_backbones(backbones)
        sequences = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMVLSPADKTNVKAAW"]
        with torch.no_grad():
            out = model(**processor(sequences))
    print(
        f"backbones: ESM-2-like (dim {model.config.backbone_hidden_sizes[0]}), ProtT5-like "
        f"(dim {model.config.backbone_hidden_sizes[1]}); fusion: {model.config.fusion}"
    )
    print(f"fused embedding per sequence: {tuple(out.pooler_output.shape)}")
    torch.set_printoptions(precision=4, sci_mode=False)
    print(out.pooler_output)
    print("per-residue fusion weights (ESM-2, ProtT5) of sequence 0:")
    for residue, weights in zip(sequences[0], out.fusion_weights[0]):
        print(f"  {residue}  {weights[0]:.3f}  {weights[1]:.3f}")


if __name__ == "__main__":
    main()
