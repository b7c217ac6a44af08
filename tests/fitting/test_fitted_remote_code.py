"""Every fitted fusion (and `average`, the new poolings and layer menus) saved and reloaded through remote code, in a
Python that cannot import hf_metaembed (issue 19: "saved and reloaded through remote code without the library")."""

import json
import sys
from pathlib import Path

import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor, fit_fusion
from hf_metaembed.fitting import fitted_fusion_names

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from remote_code import run_without_the_library  # noqa: E402

PROTEINS = ["MKTAYIAKQRQISFVK", "GSHMVLSPADKTNVKAAW", "MVLSGEDKSNIKAAWGKIGGHG", "MKVLA"]

REMOTE_SCRIPT = """
import json
import torch
from transformers import AutoModel, AutoProcessor

folders, proteins, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
results = {}
for name, folder in folders.items():
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        output = model(**processor(proteins))
    results[name] = {
        "units": output.last_hidden_state, "pooled": output.pooler_output, "weights": output.fusion_weights
    }
torch.save(results, out)
"""


def test_fitted_fusions_and_new_poolings_load_as_remote_code(tiny_esm, tiny_prott5, tmp_path):
    pair = [tiny_esm, tiny_prott5]
    processor = MetaEmbedProcessor.from_backbones(pair)
    settings = {
        name: {"fusion": name, "fusion_dim": 4, "lle_anchors": 40, "lle_neighbors": 3}
        for name in fitted_fusion_names()
    }
    settings["average"] = {"fusion": "average"}
    settings["gated_mean"] = {"fusion": "mean", "pooling": "gated_mean"}
    settings["latent_attention"] = {"fusion": "mean", "pooling": "latent_attention"}
    settings["mean_max"] = {"fusion": "mean", "pooling": "mean_max"}
    settings["layer_menu"] = {"fusion": "dme", "backbone_layers": [[-1, -2], "attention"], "layer_combine": "concat"}
    settings["mix_norm"] = {"fusion": "concat", "backbone_layers": ["mix", "last"], "layer_mix_norm": True}
    models, folders = {}, {}
    for name, config in settings.items():
        model = MetaEmbedModel.from_backbones(pair, **config).eval()
        if name in fitted_fusion_names():
            fit_fusion(model, PROTEINS, processor=processor, **({"epochs": 1} if "aeme" in name else {}))
        folders[name] = str(tmp_path / name)
        # `average` has no weights of its own: without the backbones' there would be no weights file to load
        model.save_pretrained(folders[name], save_backbone_weights=name == "average")
        processor.save_pretrained(folders[name])
        models[name] = model
    result = run_without_the_library(
        REMOTE_SCRIPT, [json.dumps(folders), json.dumps(PROTEINS), tmp_path / "out.pt"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    batch = processor(PROTEINS)
    for name, model in models.items():
        with torch.no_grad():
            local = model(**batch)
        torch.testing.assert_close(remote[name]["units"], local.last_hidden_state, atol=1e-6, rtol=1e-5, msg=name)
        torch.testing.assert_close(remote[name]["pooled"], local.pooler_output, atol=1e-6, rtol=1e-5, msg=name)
        torch.testing.assert_close(remote[name]["weights"], local.fusion_weights, atol=1e-6, rtol=1e-5, msg=name)
