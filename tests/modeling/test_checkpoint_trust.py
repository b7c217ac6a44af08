"""Checkpoints that know their backbones (issue 14, items 1 and 2; issue 13, item 8).

A checkpoint saved without backbone weights records a fingerprint of each backbone and refuses weights that differ;
saving options are per call; checkpoints store backbone weights under the names the backbone classes use today, so
Accelerate's empty-weights loading and Trainer's reloads read them without key reports.
"""

import json
import logging
import shutil
from pathlib import Path

import pytest
import tiny_backbones
import torch
from accelerate import init_empty_weights, load_checkpoint_and_dispatch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset
from hf_metaembed.modeling.backbones import BackboneNotFoundError
from hf_metaembed.modeling.safe_files import BackboneMismatchError, weights_fingerprint

PROTEINS = ["MKTAYIAKQR", "GSHW", "MVLSPADKTNVK"]
V0_1 = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints_v0_1"


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, str]:
    """Tiny ESM-2 and Ankh folders that tests copy before replacing, deleting or moving them."""
    root = tmp_path_factory.mktemp("originals")
    return {"esm": tiny_backbones.make_tiny_esm(root / "esm"), "ankh": tiny_backbones.make_tiny_ankh(root / "ankh")}


@pytest.fixture
def folders(originals, tmp_path) -> dict[str, str]:
    """This test's own copies of the backbone folders (what a backbone-free checkpoint refers to)."""
    return {name: str(shutil.copytree(path, tmp_path / "backbones" / name)) for name, path in originals.items()}


def _trained_like(backbone_folders: list[str], **settings) -> MetaEmbedForSequenceClassification:
    """A model whose fusion and head are off their initial values, so a load that re-initialises them shows."""
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(backbone_folders, num_labels=2, **settings)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".backbone_" not in f".{name}":
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.fixture
def saved(folders, tmp_path):
    """A model over the copied folders, saved without backbone weights, with its reference logits."""
    model = _trained_like([folders["esm"], folders["ankh"]])
    model.save_pretrained(tmp_path / "small", save_backbone_weights=False)
    batch = MetaEmbedProcessor.from_backbones([folders["esm"], folders["ankh"]])(PROTEINS)
    with torch.no_grad():
        logits = model(**batch).logits
    return model, tmp_path / "small", batch, logits


def _weight_keys(folder: Path) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        return set(handle.keys())


def _has_backbone_weights(folder: Path) -> bool:
    return any(".backbone_" in f".{key}" for key in _weight_keys(folder))


# ------------------------------------------------------------------------------------ fingerprints in the config


def test_backbone_free_save_records_each_backbone_fingerprint_and_it_round_trips(saved, tmp_path):
    model, small, _, _ = saved
    stored = json.loads((small / "config.json").read_text())
    expected = [weights_fingerprint(backbone) for backbone in model.metaembed.backbones]
    assert [record["fingerprint"] for record in stored["backbones"]] == expected
    assert all(len(fp["sha256"]) == 64 and fp["dtype"] == "float32" for fp in expected)
    assert expected[0] != expected[1]
    config = MetaEmbedConfig.from_pretrained(small)
    assert [record["fingerprint"] for record in config.backbones] == expected
    assert MetaEmbedConfig.from_dict(config.to_dict()).backbones == config.backbones
    # the model's own config is untouched by the save, and a full save needs (and records) no fingerprint
    assert [record["fingerprint"] for record in model.config.backbones] == [None, None]
    model.save_pretrained(tmp_path / "full")
    assert [r["fingerprint"] for r in json.loads((tmp_path / "full" / "config.json").read_text())["backbones"]] == [
        None,
        None,
    ]


def test_fingerprint_is_exact_one_changed_weight_changes_it(folders):
    model = MetaEmbedForSequenceClassification.from_backbones([folders["esm"]], num_labels=2)
    before = weights_fingerprint(model.metaembed.backbone_0)
    with torch.no_grad():
        model.metaembed.backbone_0.encoder.layer[0].intermediate.dense.weight[0, 0] += 1e-6
    assert weights_fingerprint(model.metaembed.backbone_0)["sha256"] != before["sha256"]


# ------------------------------------------------------------------------------------- saving options per call


def test_save_backbone_weights_false_is_for_that_call_only(saved, tmp_path):
    model, small, _, _ = saved
    assert not _has_backbone_weights(small)
    assert json.loads((small / "config.json").read_text())["save_backbone_weights"] is False
    assert model.config.save_backbone_weights is True
    model.save_pretrained(tmp_path / "next")
    assert _has_backbone_weights(tmp_path / "next")
    assert json.loads((tmp_path / "next" / "config.json").read_text())["save_backbone_weights"] is True


def test_model_loaded_from_a_backbone_free_checkpoint_saves_in_full(saved, tmp_path):
    _, small, batch, logits = saved
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(small).eval()
    assert reloaded.config.save_backbone_weights is True
    reloaded.save_pretrained(tmp_path / "resaved")
    assert _has_backbone_weights(tmp_path / "resaved")
    again = MetaEmbedForSequenceClassification.from_pretrained(tmp_path / "resaved").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, logits, atol=0, rtol=0)


def _train_briefly(model, processor, output_dir: Path) -> Path:
    """Two steps of a real `Trainer` with a checkpoint at step 2; returns the checkpoint folder."""
    dataset = MetaEmbedDataset(processor, PROTEINS + ["MKLV"], labels=[0, 1, 0, 1])
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=2,
        save_strategy="steps",
        save_steps=2,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=MetaEmbedDataCollator(processor))
    trainer.train()
    return output_dir / "checkpoint-2"


def test_trainer_checkpoints_are_full_after_a_backbone_free_save(saved, folders, tmp_path):
    model, _, _, _ = saved
    processor = MetaEmbedProcessor.from_backbones([folders["esm"], folders["ankh"]])
    checkpoint = _train_briefly(model, processor, tmp_path / "trainer")
    assert _has_backbone_weights(checkpoint)
    assert json.loads((checkpoint / "config.json").read_text())["save_backbone_weights"] is True


def test_trainer_checkpoints_are_small_when_asked_for_that_model(folders, tmp_path):
    model = _trained_like([folders["esm"], folders["ankh"]], save_backbone_weights=False)
    processor = MetaEmbedProcessor.from_backbones([folders["esm"], folders["ankh"]])
    checkpoint = _train_briefly(model, processor, tmp_path / "trainer")
    assert not _has_backbone_weights(checkpoint)
    stored = json.loads((checkpoint / "config.json").read_text())
    assert all(record["fingerprint"] for record in stored["backbones"])
    # a full save of the same model is still one call away
    model.save_pretrained(tmp_path / "full", save_backbone_weights=True)
    assert _has_backbone_weights(tmp_path / "full") and model.config.save_backbone_weights is False


# --------------------------------------------------------------------------------- verification when loading


def test_reload_with_the_same_backbones_reproduces_the_outputs(saved):
    _, small, batch, logits = saved
    reloaded = AutoModelForSequenceClassification.from_pretrained(small).eval()
    assert type(reloaded) is MetaEmbedForSequenceClassification
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, logits, atol=0, rtol=0)


def test_replaced_backbone_weights_are_refused_with_both_fingerprints_and_the_override(saved, folders, tmp_path):
    model, small, batch, logits = saved
    expected = weights_fingerprint(model.metaembed.backbone_0)["sha256"]
    shutil.copytree(folders["esm"], tmp_path / "kept_esm")
    shutil.rmtree(folders["esm"])
    tiny_backbones.make_tiny_esm(folders["esm"], seed=1)  # same shapes, other weights
    with pytest.raises(BackboneMismatchError) as error:
        MetaEmbedForSequenceClassification.from_pretrained(small)
    message = str(error.value)
    assert message.startswith(f"backbone 0 ({folders['esm']})")
    assert f"the checkpoint expects sha256:{expected}" in message
    found = weights_fingerprint(tiny_backbones.build_tiny_esm(seed=1)[0])["sha256"]
    assert f"fingerprint sha256:{found}" in message
    assert "verify_backbones=False" in message and "backbone_paths={0:" in message
    # the explicit override loads the new weights, which change the predictions
    forced = MetaEmbedForSequenceClassification.from_pretrained(small, verify_backbones=False).eval()
    with torch.no_grad():
        assert not torch.allclose(forced(**batch).logits, logits)
    # pointing at the original weights reproduces the saved model exactly, and the record follows the new place
    moved = MetaEmbedForSequenceClassification.from_pretrained(small, backbone_paths={0: tmp_path / "kept_esm"})
    with torch.no_grad():
        torch.testing.assert_close(moved.eval()(**batch).logits, logits, atol=0, rtol=0)
    assert moved.config.backbone_names[0] == str(tmp_path / "kept_esm")


def test_backbone_paths_by_stored_name_and_unknown_keys(saved, folders, tmp_path):
    _, small, batch, logits = saved
    moved_ankh = shutil.move(folders["ankh"], tmp_path / "moved_ankh")
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(small, backbone_paths={folders["ankh"]: moved_ankh})
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**batch).logits, logits, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"backbone_paths names no backbone of this checkpoint: 2; use one of: 0 or"):
        MetaEmbedForSequenceClassification.from_pretrained(small, backbone_paths={2: moved_ankh})


def test_backbone_paths_on_a_full_checkpoint_is_an_error(saved, tmp_path):
    model, _, _, _ = saved
    model.save_pretrained(tmp_path / "full")
    with pytest.raises(ValueError, match="backbone_paths is for checkpoints saved without backbone weights"):
        MetaEmbedForSequenceClassification.from_pretrained(tmp_path / "full", backbone_paths={0: "elsewhere"})


def test_missing_backbone_folder_names_where_it_looked_and_how_to_point_elsewhere(saved, folders):
    _, small, _, _ = saved
    shutil.rmtree(folders["ankh"])
    with pytest.raises(BackboneNotFoundError) as error:
        MetaEmbedForSequenceClassification.from_pretrained(small)
    message = str(error.value)
    assert f"backbone 1 ({folders['ankh']}) was not found: there is no folder {folders['ankh']}" in message
    assert "backbone_paths={1: 'path/or/hub-id'}" in message
    assert "pickle" not in message


def test_pickle_only_backbone_folder_names_allow_pickle(saved, folders):
    _, small, batch, logits = saved
    folder = Path(folders["esm"])
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match=r"backbone 0 .* has only pickle weights .*allow_pickle=True"):
        MetaEmbedForSequenceClassification.from_pretrained(small)
    trusted = MetaEmbedForSequenceClassification.from_pretrained(small, allow_pickle=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(trusted(**batch).logits, logits, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            {"hidden_size": 24, "intermediate_size": 48},
            "has hidden size 24, but this checkpoint's layers were trained",
        ),
        ({"num_hidden_layers": 3}, "has number of layers 3, but this checkpoint's layers were trained"),
    ],
)
def test_backbone_of_another_shape_is_one_clear_error(saved, folders, shape, message):
    _, small, _, _ = saved
    shutil.rmtree(folders["esm"])
    tiny_backbones.make_tiny_esm(folders["esm"], **shape)
    with pytest.raises(BackboneMismatchError, match=message) as error:
        MetaEmbedForSequenceClassification.from_pretrained(small)
    assert str(error.value).count("\n") == 0 and "backbone_paths={0: ...}" in str(error.value)


def test_backbone_of_another_family_is_one_clear_error(saved, folders):
    _, small, _, _ = saved
    shutil.rmtree(folders["esm"])
    shutil.copytree(folders["ankh"], folders["esm"])
    with pytest.raises(BackboneMismatchError, match=r"backbone 0 .* has model type 't5', but .* of model type 'esm'"):
        MetaEmbedForSequenceClassification.from_pretrained(small)


def test_backbone_run_in_another_dtype_verifies_after_the_same_cast(folders, tmp_path):
    model = MetaEmbedForSequenceClassification.from_backbones(
        [folders["esm"]], num_labels=2, backbone_kwargs={"dtype": torch.bfloat16}
    )
    assert model.metaembed.backbone_0.dtype == torch.bfloat16
    model.save_pretrained(tmp_path / "small", save_backbone_weights=False)
    assert json.loads((tmp_path / "small" / "config.json").read_text())["backbones"][0]["fingerprint"]["dtype"] == (
        "bfloat16"
    )
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path / "small")
    saved_state = model.metaembed.backbone_0.state_dict()
    for key, value in reloaded.metaembed.backbone_0.state_dict().items():
        assert torch.equal(value.to(saved_state[key].dtype), saved_state[key]), key


def test_release_0_1_backbone_free_checkpoint_loads_unverified_with_one_info_line(tmp_path, caplog):
    folder = shutil.copytree(V0_1 / "seqcls_hp_cdme_linear_nobackbone", tmp_path / "v0_1")
    config_path = folder / "config.json"
    config_path.write_text(config_path.read_text().replace("{FIXTURES}", str(V0_1)))
    assert "fingerprint" not in config_path.read_text()
    with caplog.at_level(logging.INFO, logger="hf_metaembed.modeling.loading_metaembed"):
        model = MetaEmbedForSequenceClassification.from_pretrained(folder)
    lines = [r.getMessage() for r in caplog.records if r.name == "hf_metaembed.modeling.loading_metaembed"]
    assert len(lines) == 1 and "no fingerprint of backbones [0, 1]" in lines[0] and "unverified" in lines[0]
    assert [record["fingerprint"] for record in model.config.backbones] == [None, None]


# ------------------------------------------------------------------------ today's names: Accelerate and Trainer


def test_checkpoint_stores_the_models_own_names(folders, tiny_prott5, tmp_path):
    model = _trained_like([folders["esm"], tiny_prott5])
    model.save_pretrained(tmp_path / "full")
    keys = _weight_keys(tmp_path / "full")
    assert not any(key.endswith(("LayerNorm.gamma", "LayerNorm.beta")) or "*" in key for key in keys)
    # every tensor of the model, less the tied copy T5 shares with its embedding (declared as not saved)
    assert keys == set(model.state_dict()) - model._keys_to_ignore_on_save
    assert model._keys_to_ignore_on_save == {"metaembed.backbone_1.encoder.embed_tokens.weight"}
    _, info = MetaEmbedForSequenceClassification.from_pretrained(tmp_path / "full", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_init_empty_weights_and_load_checkpoint_and_dispatch_with_esm_backbones(folders, tiny_prott5, tmp_path):
    batch = MetaEmbedProcessor.from_backbones([folders["esm"]])(PROTEINS)
    model = _trained_like([folders["esm"]])
    model.save_pretrained(tmp_path / "esm")
    with init_empty_weights():
        empty = MetaEmbedForSequenceClassification(MetaEmbedConfig.from_pretrained(tmp_path / "esm"))
    dispatched = load_checkpoint_and_dispatch(empty, str(tmp_path / "esm"), device_map="auto").eval()
    with torch.no_grad():
        torch.testing.assert_close(dispatched(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    # with a T5-family backbone, accelerate's documented `tie_weights()` re-ties its shared embedding
    batch = MetaEmbedProcessor.from_backbones([folders["esm"], tiny_prott5])(PROTEINS)
    model = _trained_like([folders["esm"], tiny_prott5])
    model.save_pretrained(tmp_path / "esm_t5")
    with init_empty_weights():
        empty = MetaEmbedForSequenceClassification(MetaEmbedConfig.from_pretrained(tmp_path / "esm_t5"))
    empty.tie_weights()
    dispatched = load_checkpoint_and_dispatch(empty, str(tmp_path / "esm_t5"), device_map="auto").eval()
    with torch.no_grad():
        torch.testing.assert_close(dispatched(**batch).logits, model(**batch).logits, atol=0, rtol=0)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_trainer_reloads_report_no_missing_or_unexpected_keys(folders, tiny_prott5, tmp_path):
    backbones = [folders["esm"], tiny_prott5]
    processor = MetaEmbedProcessor.from_backbones(backbones)
    dataset = MetaEmbedDataset(processor, PROTEINS + ["MKLV"], labels=[0, 1, 0, 1])
    collect = _Collect()
    library_logger = logging.getLogger("transformers")  # transformers does not propagate to the root logger
    library_logger.addHandler(collect)
    try:
        settings = dict(
            per_device_train_batch_size=2, report_to="none", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0
        )
        args = TrainingArguments(
            output_dir=str(tmp_path / "run"),
            max_steps=2,
            save_strategy="steps",
            save_steps=1,
            eval_strategy="steps",
            eval_steps=1,
            load_best_model_at_end=True,
            metric_for_best_model="loss",
            **settings,
        )
        collator = MetaEmbedDataCollator(processor)
        trainer = Trainer(
            model=_trained_like(backbones),
            args=args,
            train_dataset=dataset,
            eval_dataset=dataset,
            data_collator=collator,
        )
        trainer.train()  # ends by reloading the best checkpoint
        resumed = Trainer(
            model=_trained_like(backbones),
            args=TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=3, save_strategy="no", **settings),
            train_dataset=dataset,
            data_collator=collator,
        )
        resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    finally:
        library_logger.removeHandler(collect)
    reports = [m for m in collect.messages if "missing keys" in m or "unexpected keys" in m]
    assert trainer.state.best_model_checkpoint is not None and resumed.state.global_step == 3
    assert not reports, reports
