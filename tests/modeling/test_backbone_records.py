"""One record per backbone family (`BackboneFamily`) and one record per backbone in the config (`backbones`)."""

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from hf_metaembed import MetaEmbedConfig, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.integrations.peft import backbone_lora_names, lora_target_modules
from hf_metaembed.modeling import backbone_families as families
from hf_metaembed.modeling.backbone_families import (
    GENERIC_FAMILY,
    BackboneFamily,
    backbone_families,
    backbone_family,
    list_backbone_families,
    register_backbone_family,
)
from hf_metaembed.modeling.backbones import backbone_class, infer_unit_type
from hf_metaembed.modeling.windowing import position_limit
from hf_metaembed.testing import TINY_BUILDERS, build_tiny_esm, tiny_builders_for

V0_1_CONFIGS = sorted((Path(__file__).parents[1] / "fixtures" / "checkpoints_v0_1").glob("*/config.json"))
LEGACY_FIELDS = {
    "backbone_configs": "config",
    "backbone_names": "name",
    "backbone_revisions": "revision",
    "backbone_unit_types": "unit_type",
    "backbone_layers": "layer",
}
PROTEIN, TEXT = "MKTAYIAKQRQISF", "the movie was not very good"


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the family registry, so a test's registrations end with it."""
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))


# ------------------------------------------------------------------------------- family records


def test_shipped_families_and_lookup():
    assert {"bert", "roberta", "esm", "t5", "static_vectors"} <= set(list_backbone_families())
    assert backbone_family("t5") is backbone_family("mt5") is backbone_family("umt5")
    assert backbone_family("esm").unit_type == "residue" and backbone_family("static_vectors").unit_type == "word"
    assert backbone_family("t5").unit_type is None  # ProtT5 or a text T5: guessed from the tokenizer
    assert not backbone_family("t5").absolute_positions and backbone_family("bert").absolute_positions
    assert backbone_family("deberta-v2") is GENERIC_FAMILY and backbone_family(None) is GENERIC_FAMILY


@pytest.mark.parametrize(
    ("model_type", "targets"),
    [
        ("bert", ["query", "value"]),
        ("roberta", ["query", "value"]),
        ("esm", ["query", "value"]),
        ("t5", ["q", "v"]),
        ("umt5", ["q", "v"]),
        ("static_vectors", []),
        ("deberta-v2", ["query_proj", "value_proj"]),  # no record: peft's own table
    ],
)
def test_lora_targets_come_from_the_family_record(model_type, targets):
    assert backbone_lora_names(model_type) == targets


def test_duplicates_and_bad_records_raise(registry):
    with pytest.raises(ValueError, match="model type 'esm' already belongs to backbone family 'esm'"):
        register_backbone_family(BackboneFamily(name="esm_again", model_types=("esm",)))
    with pytest.raises(ValueError, match="a backbone family named 'bert' is already registered"):
        register_backbone_family(BackboneFamily(name="bert", model_types=("new_bert_type",)))
    with pytest.raises(ValueError, match="lists no model types"):
        register_backbone_family(BackboneFamily(name="nothing", model_types=()))
    with pytest.raises(ValueError, match="unknown unit_type 'atom'"):
        BackboneFamily(name="atoms", model_types=("atoms",), unit_type="atom")
    with pytest.raises(TypeError, match="model_types must be a tuple of names"):
        BackboneFamily(name="typo", model_types="typo")
    # a failed registration leaves nothing behind
    assert backbone_family("new_bert_type") is GENERIC_FAMILY and "esm_again" not in list_backbone_families()


def test_every_family_record_resolves_its_tiny_builders():
    for family in backbone_families():
        for name, build in tiny_builders_for(family).items():
            assert TINY_BUILDERS[name][0] is build, (family.name, name)
    assert list(tiny_builders_for("mt5")) == ["prott5", "ankh"]


# ------------------------------------------------------------ a family registered from outside


class TinyConvConfig(PreTrainedConfig):
    model_type = "metaembed_test_tiny_conv"

    vocab_size: int = 33
    hidden_size: int = 12
    num_hidden_layers: int = 1
    pad_token_id: int | None = 1
    # deliberately tiny: the family record says this encoder has no absolute positions, so it bounds nothing
    max_position_embeddings: int = 4
    initializer_range: float = 0.02


class TinyConvLayer(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(size, size, kernel_size=3, padding=1)
        self.proj = nn.Linear(size, size)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.conv(states.transpose(1, 2)).transpose(1, 2)))


class TinyConvModel(PreTrainedModel):
    """A convolutional encoder no Auto class knows: only its family record can load it."""

    config_class = TinyConvConfig
    base_model_prefix = "tiny_conv"
    _no_split_modules = []

    def __init__(self, config: TinyConvConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layer = TinyConvLayer(config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids, attention_mask=None, output_hidden_states=None, return_dict=True, **kwargs):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        embedded = self.embed(input_ids) * mask.unsqueeze(-1)
        states = self.layer(embedded) * mask.unsqueeze(-1)
        hidden_states = (embedded, states) if output_hidden_states else None
        return BaseModelOutput(last_hidden_state=states, hidden_states=hidden_states)


TINY_CONV = BackboneFamily(
    name="tiny_conv",
    model_types=(TinyConvConfig.model_type,),
    model_class=TinyConvModel,
    unit_type="residue",
    chain_separator=("cls_token_id",),
    absolute_positions=False,
    lora_targets=("proj",),
)


@pytest.fixture
def tiny_conv(registry, tmp_path) -> str:
    """A saved TinyConvModel with an ESM-2 tokenizer, its config known to AutoConfig and its family registered."""
    AutoConfig.register(TinyConvConfig.model_type, TinyConvConfig, exist_ok=True)
    register_backbone_family(TINY_CONV)
    torch.manual_seed(0)
    folder = tmp_path / "tiny_conv"
    TinyConvModel(TinyConvConfig()).save_pretrained(folder)
    build_tiny_esm()[1].save_pretrained(folder)
    return str(folder)


def test_family_registered_outside_the_package_drives_loading(tiny_conv, tiny_esm, tmp_path):
    model = MetaEmbedModel.from_backbones([tiny_conv, tiny_esm], fusion="dme").eval()
    assert isinstance(model.backbone_0, TinyConvModel)
    assert backbone_class(model.backbone_0.config) is TinyConvModel
    assert model.config.backbone_unit_types == ["residue", "residue"]
    assert infer_unit_type(None, TinyConvConfig()) == "residue"  # the record answers without a tokenizer
    assert position_limit(model.backbone_0) is None  # no absolute positions: max_position_embeddings=4 is no bound

    processor = MetaEmbedProcessor.from_backbones([tiny_conv, tiny_esm])
    assert processor.max_lengths[0] == processor.tokenizers[0].model_max_length  # not capped at 4
    batch = processor([PROTEIN, PROTEIN[:5]])
    with torch.no_grad():
        out = model(**batch)
    assert out.last_hidden_state.shape == (2, len(PROTEIN), model.fusion.dim)

    model.save_pretrained(tmp_path / "saved")
    reloaded = MetaEmbedModel.from_pretrained(tmp_path / "saved").eval()  # rebuilt through the record
    assert isinstance(reloaded.backbone_0, TinyConvModel)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).last_hidden_state, out.last_hidden_state)

    targets = lora_target_modules(model)
    assert re.fullmatch(targets.target_modules, "backbone_0.layer.proj")
    assert re.fullmatch(targets.target_modules, "backbone_1.encoder.layer.0.attention.self.query")
    assert not re.fullmatch(targets.target_modules, "backbone_0.layer.conv")


def test_family_chain_separator_is_used_and_survives_processor_save(tiny_conv, tmp_path):
    processor = MetaEmbedProcessor.from_backbones([tiny_conv], architecture="sc")
    tokenizer = processor.tokenizers[0]
    assert tokenizer.cls_token_id != (tokenizer.sep_token_id or tokenizer.eos_token_id)  # differs from the default
    ids = processor(ligand=[["MKT"]], receptor=[["GSH"]])["input_ids"][0, 0].tolist()
    residues = [tokenizer.convert_tokens_to_ids(letter) for letter in "MKT"]
    assert ids[1:4] == residues and ids[4] == tokenizer.cls_token_id  # <cls> M K T <cls> G S H <eos>

    processor.save_pretrained(tmp_path / "processor")
    reloaded = MetaEmbedProcessor.from_pretrained(tmp_path / "processor")
    assert reloaded.model_types == [TinyConvConfig.model_type]
    assert reloaded(ligand=[["MKT"]], receptor=[["GSH"]])["input_ids"][0, 0].tolist() == ids


# ----------------------------------------------------------------------- tiny builder of every family


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_every_tiny_builder_loads_through_from_backbones_and_runs(name, tiny_backbones_root):
    folder = tiny_backbones_root[name]
    model = MetaEmbedModel.from_backbones([folder], fusion="concat").eval()
    processor = MetaEmbedProcessor.from_backbones([folder])
    config = model.backbone_0.config
    family = backbone_family(config.model_type)
    assert name in tiny_builders_for(family)
    assert type(model.backbone_0) is family.model_class_for(config)
    if family.unit_type is not None:
        assert processor.unit_types == [family.unit_type]
    text = processor.unit_types[0] == "word"
    batch = processor([TEXT if text else PROTEIN])
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    units = len(TEXT.split()) if text else len(PROTEIN)
    assert states.shape == (1, units, 16) and torch.isfinite(states).all()
    assert states.abs().sum() > 0


# --------------------------------------------------------------------- per-backbone config records


def _record_settings(tiny_esm, tiny_prott5) -> tuple[list[dict], dict]:
    configs = [AutoConfig.from_pretrained(tiny_esm).to_dict(), AutoConfig.from_pretrained(tiny_prott5).to_dict()]
    legacy = {
        "backbone_configs": configs,
        "backbone_names": [tiny_esm, tiny_prott5],
        "backbone_revisions": ["main", None],
        "backbone_unit_types": ["residue", "residue"],
        "backbone_layers": ["mix", 1],
    }
    records = [
        {"name": tiny_esm, "revision": "main", "unit_type": "residue", "layer": "mix", "config": configs[0]},
        {"name": tiny_prott5, "unit_type": "residue", "layer": 1, "config": configs[1]},
    ]
    return records, legacy


def test_parallel_lists_and_records_give_the_same_config(tiny_esm, tiny_prott5, tmp_path):
    records, legacy = _record_settings(tiny_esm, tiny_prott5)
    from_lists = MetaEmbedConfig(**legacy, window_size=[16, None])
    from_records = MetaEmbedConfig(backbones=records, window_size=[16, None])
    assert from_lists.backbones == from_records.backbones
    assert [r["window_size"] for r in from_records.backbones] == [16, None]
    for field, key in LEGACY_FIELDS.items():
        expected = [record[key] for record in from_records.backbones]
        assert getattr(from_lists, field) == getattr(from_records, field) == expected, field
    assert from_records.backbone_revisions == ["main", None] and from_records.backbone_layers == ["mix", 1]

    stored = from_records.to_dict()
    assert not set(LEGACY_FIELDS) & set(stored) and len(stored["backbones"]) == 2
    from_records.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert not set(LEGACY_FIELDS) & set(on_disk)
    assert [record["name"] for record in on_disk["backbones"]] == [tiny_esm, tiny_prott5]
    reloaded = MetaEmbedConfig.from_pretrained(tmp_path)
    assert reloaded.backbones == from_records.backbones and reloaded.window_size == [16, None]
    assert reloaded.backbone_hidden_sizes == from_lists.backbone_hidden_sizes == [16, 16]


def test_record_defaults_and_windows(tiny_esm, tiny_prott5):
    records, _ = _record_settings(tiny_esm, tiny_prott5)
    bare = MetaEmbedConfig(backbones=[{"config": records[0]["config"]}, {"config": records[1]["config"]}])
    # release 0.1's defaults: unit type "word" (from_backbones fills the real one), layer "last", no window
    assert bare.backbone_unit_types == ["word", "word"] and bare.backbone_layers == ["last", "last"]
    assert bare.backbone_names == [None, None] and bare.window_size is None

    windowed = MetaEmbedConfig(backbones=[dict(records[0], window_size=12), records[1]])
    assert windowed.window_size == [12, None]  # records alone set the windows
    overridden = MetaEmbedConfig(backbones=[dict(records[0], window_size=12), records[1]], window_size=20)
    assert [r["window_size"] for r in overridden.backbones] == [20, 20]  # the top-level setting wins
    overridden.window_size = None
    assert [r["window_size"] for r in overridden.backbones] == [None, None]  # and stays mirrored


def test_assigning_a_legacy_list_sets_every_record(tiny_esm, tiny_prott5):
    records, _ = _record_settings(tiny_esm, tiny_prott5)
    config = MetaEmbedConfig(backbones=records)
    config.backbone_layers = ["last", -2]
    config.backbone_names = ["facebook/esm2_t6_8M_UR50D", tiny_prott5]
    assert [r["layer"] for r in config.backbones] == ["last", -2]
    assert config.backbones[0]["name"] == "facebook/esm2_t6_8M_UR50D"
    with pytest.raises(ValueError, match="got 1 values for 2 backbones"):
        config.backbone_layers = ["last"]
    # a list given beside the records overrides that field of each (as from_dict(stored, backbone_layers=...) does)
    updated = MetaEmbedConfig.from_dict(config.to_dict(), backbone_layers=["mix", "mix"])
    assert updated.backbone_layers == ["mix", "mix"]
    with pytest.raises(ValueError, match="unknown layer 'top' for backbone 0"):
        MetaEmbedConfig(backbones=records, backbone_layers=["top", "last"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backbones": [{"name": "x"}]}, r"backbones\[0\] must be a dict with a 'config'"),
        ({"backbones": [{"config": {"model_type": "esm"}, "layers": "last"}]}, r"unknown key\(s\) \['layers'\]"),
        ({"backbones": [{"config": {"hidden_size": 8}}]}, r"backbones\[0\] \(None\) has no config with a model_type"),
        ({"backbone_configs": [{"model_type": "esm"}], "backbone_names": ["a", "b"]}, "backbone_names has 2 entries"),
    ],
)
def test_bad_backbone_records_name_the_problem(settings, message):
    with pytest.raises(ValueError, match=message):
        MetaEmbedConfig(**settings)


@pytest.mark.parametrize("path", V0_1_CONFIGS, ids=lambda path: path.parent.name)
def test_release_0_1_config_json_becomes_records(path):
    stored = json.loads(path.read_text(encoding="utf-8"))
    config = MetaEmbedConfig.from_dict(stored)
    assert config.num_backbones == len(stored["backbone_configs"]) > 0
    for field, key in LEGACY_FIELDS.items():
        assert [record[key] for record in config.backbones] == stored[field], field
    assert not set(LEGACY_FIELDS) & set(config.to_dict())
