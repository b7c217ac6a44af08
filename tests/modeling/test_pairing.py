"""Pair architectures (single, sc, ec, hp, pad) with every head and unit encoder, over one and two tiny protein
backbones.

Every test that loops over architectures, heads or unit encoders is parametrised over the registries, so a new entry is
tested the day it is registered.
"""

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from remote_code import BLOCK_HF_METAEMBED

from hf_metaembed import (
    MetaEmbedForSequenceClassification,
    MetaEmbedProcessor,
    list_architectures,
    list_heads,
    list_unit_encoders,
)
from hf_metaembed.modeling.pairing import PAIRINGS
from hf_metaembed.modeling.unit_encoders import UNIT_ENCODERS, build_unit_encoder

ARCHITECTURES = list_architectures()
PAIR_ARCHITECTURES = [name for name in ARCHITECTURES if PAIRINGS[name].is_pair]
HEADS = list_heads()
UNIT_ENCODER_NAMES = list_unit_encoders()

# complexes with 1-3 chains per side and very different lengths, so batching pads a lot
LIGANDS = [["MKTAYIAKQR", "GSH"], ["WLLE"], ["ACDEFGHIK", "LMNPQ", "RSTVWY"]]
RECEPTORS = [["MVLSPADKTNVKAAW"], ["QQRRKK", "DE"], ["HHW"]]
SEQUENCES = ["MKTAYIAKQRGSH", "WLLE", "ACDEFGHIKLMNPQRSTVWY"]
LABELS = torch.tensor([7.5, 5.0, 9.25])


@pytest.fixture(scope="module")
def backbone_sets(tiny_esm, tiny_prott5, tiny_ankh) -> dict[str, list[str]]:
    return {"one": [tiny_esm], "two": [tiny_esm, tiny_prott5], "ankh": [tiny_ankh]}


def build(backbones: list[str], architecture: str, head: str = "linear", unit_encoder: str = "none", **settings):
    """Model (seeded) and processor for one architecture.

    Every trainable weight is moved off its initial value: at initialisation (std 0.02, bias-free feed-forward blocks)
    `hp` and `pad` logits are about 1e-5, so equalities checked to 1e-5 would hold whatever the model did.
    """
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(
        backbones, architecture=architecture, head=head, unit_encoder=unit_encoder, num_labels=1, **settings
    )
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.3 * torch.randn_like(parameter))
    processor = MetaEmbedProcessor.from_backbones(backbones, architecture=architecture)
    return model, processor


def encode(processor, architecture: str, samples: list[int] | None = None, **kwargs):
    samples = list(range(len(LIGANDS))) if samples is None else samples
    if architecture == "single":
        return processor([SEQUENCES[i] for i in samples], **kwargs)
    return processor(ligand=[LIGANDS[i] for i in samples], receptor=[RECEPTORS[i] for i in samples], **kwargs)


def pad_further(batch, processor, tokens: int = 5, units: int = 7):
    """The same batch with extra padding tokens and extra padded unit slots."""
    padded = dict(batch)
    segments, count, length = batch["input_ids"].shape
    pad_ids = torch.tensor([backbone.pad_id for backbone in processor.backbones]).view(1, count, 1)
    padded["input_ids"] = torch.cat([batch["input_ids"], pad_ids.expand(segments, count, tokens)], dim=2)
    padded["attention_mask"] = torch.nn.functional.pad(batch["attention_mask"], (0, tokens))
    padded["token_unit_index"] = torch.nn.functional.pad(batch["token_unit_index"], (0, tokens), value=-1)
    padded["unit_mask"] = torch.nn.functional.pad(batch["unit_mask"], (0, units))
    return padded


def predict(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def pairing_config(architecture: str, **settings) -> SimpleNamespace:
    """What a pair module reads from the config: the block's declared settings at their defaults, plus `settings`."""
    return SimpleNamespace(
        **{**PAIRINGS[architecture].config_fields, "pooling": "attention", "level": "unit", **settings}
    )


def unit_encoder_for(name: str, dim: int, architecture: str = "single") -> torch.nn.Module:
    """The unit encoder `name` over `dim`-wide states, at its declared defaults (2 ConvBERT heads), in eval mode,
    running where `architecture` (at its defaults) says."""
    torch.manual_seed(1)
    fields = {**PAIRINGS[architecture].config_fields, **UNIT_ENCODERS[name].config_fields, "convbert_num_heads": 2}
    return build_unit_encoder(SimpleNamespace(unit_encoder=name, architecture=architecture, **fields), dim).eval()


def encode_then_pair(pairing, unit_encoder, states, unit_mask, sample, side):
    """The model's two stages after fusion: the unit encoder (where the architecture declares), then the pairing;
    returns `(pooled, refined unit states)`."""
    refined = unit_encoder(states, unit_mask, sample, side)
    return pairing(refined, unit_mask, sample, side), refined


# ------------------------------------------------------------------------------------ every combination


@pytest.mark.parametrize("backbones", ["one", "two"])
@pytest.mark.parametrize("unit_encoder", UNIT_ENCODER_NAMES)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forward_backward_reaches_every_trainable_parameter(
    architecture, head, unit_encoder, backbones, backbone_sets
):
    model, processor = build(backbone_sets[backbones], architecture, head, unit_encoder)
    model.train()
    output = model(**encode(processor, architecture), labels=LABELS)
    assert output.logits.shape == (3, 1) and torch.isfinite(output.logits).all()
    output.loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(".backbone_" in name for name in trainable)
    missing = [name for name, p in trainable.items() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    assert sum(float(p.grad.abs().sum()) for p in trainable.values()) > 0


@pytest.mark.parametrize("backbones", ["one", "two"])
@pytest.mark.parametrize("unit_encoder", UNIT_ENCODER_NAMES)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_padding_and_batch_composition_invariance(architecture, head, unit_encoder, backbones, backbone_sets):
    model, processor = build(backbone_sets[backbones], architecture, head, unit_encoder)
    model.eval()
    batch = encode(processor, architecture)
    together = predict(model, batch)
    for sample in range(3):
        alone = predict(model, encode(processor, architecture, [sample]))
        torch.testing.assert_close(alone[0], together[sample], atol=1e-5, rtol=0)
    reordered = predict(model, encode(processor, architecture, [2, 0, 1]))
    torch.testing.assert_close(reordered, together[[2, 0, 1]], atol=1e-5, rtol=0)
    torch.testing.assert_close(predict(model, pad_further(batch, processor)), together, atol=1e-5, rtol=0)


@pytest.mark.parametrize("unit_encoder", UNIT_ENCODER_NAMES)
@pytest.mark.parametrize("architecture", PAIR_ARCHITECTURES)
def test_padded_units_are_ignored_whatever_they_hold(architecture, unit_encoder):
    """Straight on the pairing module: garbage in padded unit slots must not change any pooled vector, nor any real
    unit's refined state, wherever the architecture runs the unit encoder."""
    torch.manual_seed(0)
    pairing = PAIRINGS[architecture](pairing_config(architecture, pad_num_heads=2), 8).eval()
    encode_units = unit_encoder_for(unit_encoder, 8, architecture)
    layout = {"sc": ([0, 1], [0, 0]), "hp": ([0, 0, 0, 1, 1], [0, 1, 1, 0, 1])}
    sample, side = layout.get(architecture, ([0, 0, 1, 1], [1, 0, 0, 1]))
    sample, side = torch.tensor(sample), torch.tensor(side)
    lengths = torch.randint(1, 6, (len(sample),))
    unit_mask = (torch.arange(9) < lengths[:, None]).long()
    real = unit_mask.bool()
    states = torch.randn(len(sample), 9, 8) * unit_mask.unsqueeze(-1)
    noisy = states + 100 * torch.randn_like(states) * (1 - unit_mask).unsqueeze(-1)
    with torch.no_grad():
        clean, clean_units = encode_then_pair(pairing, encode_units, states, unit_mask, sample, side)
        pooled, units = encode_then_pair(pairing, encode_units, noisy, unit_mask, sample, side)
        torch.testing.assert_close(pooled, clean, atol=1e-5, rtol=0)
        torch.testing.assert_close(units[real], clean_units[real], atol=1e-5, rtol=0)
        trimmed = int(lengths.max())
        pooled, units = encode_then_pair(
            pairing, encode_units, states[:, :trimmed], unit_mask[:, :trimmed], sample, side
        )
        torch.testing.assert_close(pooled, clean, atol=1e-5, rtol=0)
        torch.testing.assert_close(units, clean_units[:, :trimmed], atol=1e-5, rtol=0)
    assert clean.shape == (2, pairing.output_dim) and clean_units.shape == states.shape
    if unit_encoder != "none":  # the refined states come back, not the fused ones
        assert not torch.allclose(clean_units[real], states[real], atol=1e-3)


def test_pad_zeroes_padded_queries_and_ignores_padded_keys():
    torch.manual_seed(0)
    pairing = PAIRINGS["pad"](pairing_config("pad", pooling="mean", pad_num_heads=2), 8).eval()
    queries, keys = torch.randn(2, 6, 8), torch.randn(2, 5, 8)
    query_mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]).bool()
    key_mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]).bool()
    with torch.no_grad():
        attended = pairing.attend(pairing.ligand_attention, queries, query_mask, keys, key_mask)
        garbage = keys + 100 * torch.randn_like(keys) * (~key_mask).unsqueeze(-1)
        again = pairing.attend(pairing.ligand_attention, queries, query_mask, garbage, key_mask)
    assert attended[~query_mask].abs().max() == 0
    torch.testing.assert_close(again, attended, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ architecture semantics


@pytest.mark.parametrize("side_combine", ["concat", "add", "mean"])
@pytest.mark.parametrize("chain_pooling", ["mean", "attention"])
def test_hp_is_invariant_to_chain_order(chain_pooling, side_combine, backbone_sets):
    model, processor = build(
        backbone_sets["ankh"], "hp", unit_encoder="convbert", chain_pooling=chain_pooling, side_combine=side_combine
    )
    model.eval()
    batch = processor(ligand=LIGANDS, receptor=RECEPTORS)
    shuffled = processor(ligand=[chains[::-1] for chains in LIGANDS], receptor=[chains[::-1] for chains in RECEPTORS])
    torch.testing.assert_close(predict(model, shuffled), predict(model, batch), atol=1e-5, rtol=0)
    assert model.metaembed.pairing.output_dim == (32 if side_combine == "concat" else 16)


@pytest.mark.parametrize("separate_side_poolers", [True, False])
@pytest.mark.parametrize("chain_pooling", ["mean", "attention"])
def test_hp_matches_a_loop_over_chains(chain_pooling, separate_side_poolers):
    torch.manual_seed(0)
    config = pairing_config(
        "hp", pooling="attention", chain_pooling=chain_pooling, hp_separate_side_poolers=separate_side_poolers
    )
    pairing = PAIRINGS["hp"](config, 4)
    assert hasattr(pairing, "receptor_chain_pooler") == separate_side_poolers
    poolers = [pairing.pooler, getattr(pairing, "receptor_pooler", pairing.pooler)]
    chain_poolers = [pairing.chain_pooler, getattr(pairing, "receptor_chain_pooler", pairing.chain_pooler)]
    # chains listed out of order, samples with 1-3 chains per side
    sample = torch.tensor([1, 0, 1, 0, 2, 1, 2, 1, 0])
    side = torch.tensor([0, 1, 1, 0, 0, 0, 1, 1, 0])
    unit_mask = (torch.arange(6) < torch.randint(1, 7, (9,))[:, None]).long()
    states = torch.randn(9, 6, 4) * unit_mask.unsqueeze(-1)
    pooled, refined = encode_then_pair(pairing, unit_encoder_for("none", 4, "hp"), states, unit_mask, sample, side)
    assert refined is states  # no unit encoder: the fused states come back untouched
    chain_vectors = []
    for i in range(9):
        real = states[i][unit_mask[i].bool()].unsqueeze(0)
        chain_vectors.append(poolers[int(side[i])](real, torch.ones(1, real.shape[1]))[0][0])
    for s in range(3):
        sides = []
        for d in range(2):
            members = torch.stack([chain_vectors[i] for i in range(9) if sample[i] == s and side[i] == d])
            side_vector, _ = chain_poolers[d](members.unsqueeze(0), torch.ones(1, len(members)))
            sides.append(side_vector[0])
        # the reference's Linear - SiLU - Linear block (no bias) after concatenating the two sides
        expected = pairing.feed_forward(torch.cat(sides))
        assert all(layer.bias is None for layer in pairing.feed_forward if isinstance(layer, torch.nn.Linear))
        torch.testing.assert_close(pooled[s], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("unit_encoder", UNIT_ENCODER_NAMES)
def test_ec_token_mode_encodes_and_pools_the_joined_unit_sequence(unit_encoder):
    """`ec_mode="token"`: per sample, the ligand's units then the receptor's, read by the unit encoder together,
    pooled, then the Linear - SiLU block; the refined states of each side are read back from the joined rows."""
    torch.manual_seed(0)
    token = PAIRINGS["ec"](pairing_config("ec"), 4).eval()
    encode_units = unit_encoder_for(unit_encoder, 4, "ec")
    sample, side = torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1, 0, 0])
    unit_mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]])
    states = torch.randn(4, 3, 4) * unit_mask.unsqueeze(-1)
    with torch.no_grad():
        out, refined = encode_then_pair(token, encode_units, states, unit_mask, sample, side)
        for s, (ligand, receptor) in enumerate([(2, 0), (3, 1)]):
            lengths = [int(unit_mask[ligand].sum()), int(unit_mask[receptor].sum())]
            joined = torch.cat([states[ligand, : lengths[0]], states[receptor, : lengths[1]]]).unsqueeze(0)
            joined = encode_units.refine(joined, torch.ones(1, sum(lengths)))
            expected, _ = token.pooler(joined, torch.ones(1, sum(lengths)))
            torch.testing.assert_close(out[s], token.feed_forward(expected[0]), atol=1e-6, rtol=0)
            torch.testing.assert_close(refined[ligand, : lengths[0]], joined[0, : lengths[0]], atol=1e-6, rtol=0)
            torch.testing.assert_close(refined[receptor, : lengths[1]], joined[0, lengths[0] :], atol=1e-6, rtol=0)
    assert (refined[unit_mask == 0] == 0).all()


def test_ec_pooled_mode_concatenates_the_two_side_vectors():
    torch.manual_seed(0)
    pooled_mode = PAIRINGS["ec"](pairing_config("ec", ec_mode="pooled", ec_ffn="none"), 4)
    sample, side = torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1, 0, 0])
    unit_mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]])
    states = torch.randn(4, 3, 4)
    both = pooled_mode(states, unit_mask, sample, side)
    assert both.shape == (2, 8) and pooled_mode.output_dim == 8
    for s, (ligand, receptor) in enumerate([(2, 0), (3, 1)]):
        ligand_vector, _ = pooled_mode.pooler(states[ligand : ligand + 1], unit_mask[ligand : ligand + 1])
        receptor_vector, _ = pooled_mode.pooler(states[receptor : receptor + 1], unit_mask[receptor : receptor + 1])
        torch.testing.assert_close(both[s], torch.cat([ligand_vector[0], receptor_vector[0]]))
    with_block = PAIRINGS["ec"](pairing_config("ec", ec_mode="pooled"), 4)
    assert with_block.feed_forward[0].in_features == 8 and with_block(states, unit_mask, sample, side).shape == (
        2,
        8,
    )


def test_pad_with_shared_attention_is_symmetric_in_the_two_sides(backbone_sets):
    model, processor = build(backbone_sets["two"], "pad", unit_encoder="convbert", pad_shared_attention=True)
    model.eval()
    forward = predict(model, processor(ligand=LIGANDS, receptor=RECEPTORS))
    swapped = predict(model, processor(ligand=RECEPTORS, receptor=LIGANDS))
    torch.testing.assert_close(swapped, forward, atol=1e-5, rtol=0)

    separate, _ = build(backbone_sets["two"], "pad", unit_encoder="convbert", pad_shared_attention=False)
    separate.eval()
    assert hasattr(separate.metaembed.pairing, "receptor_attention")
    forward = predict(separate, processor(ligand=LIGANDS, receptor=RECEPTORS))
    swapped = predict(separate, processor(ligand=RECEPTORS, receptor=LIGANDS))
    assert not torch.allclose(swapped, forward, atol=1e-5)


def test_sc_joins_chains_with_each_family_separator(backbone_sets):
    processor = MetaEmbedProcessor.from_backbones(backbone_sets["two"], architecture="sc")
    batch = processor(ligand=[["MKT", "GS"]], receptor=[["WLE"]])
    assert batch["input_ids"].shape[0] == 1 and int(batch["unit_mask"].sum()) == 8
    for index, tokenizer in enumerate(processor.tokenizers):
        tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0, index][batch["attention_mask"][0, index] == 1])
        separator = tokenizer.sep_token or tokenizer.eos_token
        assert tokens.count(separator) >= 2, tokens  # between the three chains (plus any closing token)
        units = batch["token_unit_index"][0, index]
        assert sorted(set(units.tolist()) - {-1}) == list(range(8))


def test_hp_sides_with_different_chain_counts_share_a_batch(backbone_sets):
    processor = MetaEmbedProcessor.from_backbones(backbone_sets["one"], architecture="hp")
    batch = processor(ligand=LIGANDS, receptor=RECEPTORS)  # ligand chains 2, 1, 3; receptor chains 1, 2, 1
    assert batch["segment_sample_index"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert batch["segment_side_index"].tolist() == [0, 0, 1, 0, 1, 1, 0, 0, 0, 1]
    assert batch["unit_mask"].sum(dim=1).tolist() == [10, 3, 15, 4, 6, 2, 9, 5, 6, 3]


# ------------------------------------------------------------------------------------ save and load


@pytest.mark.parametrize("unit_encoder", UNIT_ENCODER_NAMES)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_save_and_reload_give_the_same_outputs(architecture, unit_encoder, backbone_sets, tmp_path):
    model, processor = build(backbone_sets["two"], architecture, unit_encoder=unit_encoder)
    model.eval()  # `build` moved every trainable weight off its initial value: a load that re-initialises shows
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path).eval()
    reloaded_processor = MetaEmbedProcessor.from_pretrained(tmp_path)
    assert reloaded.config.architecture == architecture and reloaded_processor.architecture == architecture
    assert reloaded.config.unit_encoder == unit_encoder
    batch = encode(reloaded_processor, architecture)
    torch.testing.assert_close(predict(reloaded, batch), predict(model, batch), atol=0, rtol=0)


REMOTE_SCRIPT = BLOCK_HF_METAEMBED + textwrap.dedent(
    """
    import json
    import torch
    from transformers import AutoModelForSequenceClassification, AutoProcessor

    results = {}
    for folder in sys.argv[2:]:
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        assert "hf_metaembed" not in type(model).__module__
        batch = processor(ligand=json.loads(sys.argv[1])[0], receptor=json.loads(sys.argv[1])[1])
        with torch.no_grad():
            results[folder] = model(**batch).logits.flatten().tolist()
    print(json.dumps(results))
    """
)


def test_every_pair_architecture_loads_as_remote_code(backbone_sets, tmp_path):
    folders, expected = [], {}
    for architecture in PAIR_ARCHITECTURES:
        model, processor = build(backbone_sets["one"], architecture, unit_encoder="convbert")
        folder = str(tmp_path / architecture)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        folders.append(folder)
        expected[folder] = predict(model.eval(), processor(ligand=LIGANDS, receptor=RECEPTORS)).flatten()
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    # one thread, as conftest sets for this process: the same summation order, so outputs agree bit for bit
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(script), json.dumps([LIGANDS, RECEPTORS]), *folders],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    for folder in folders:
        torch.testing.assert_close(torch.tensor(remote[folder]), expected[folder], atol=0, rtol=0)


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("architecture", PAIR_ARCHITECTURES)
def test_bad_complexes_name_the_sample(architecture, backbone_sets):
    processor = MetaEmbedProcessor.from_backbones(backbone_sets["one"], architecture=architecture)
    ok = ["MKT"]
    cases = [
        (dict(ligand=[ok, []], receptor=[ok, ok]), "sample 1: the ligand has no chains"),
        (dict(ligand=[ok, ok], receptor=[ok, "MKT"]), "sample 1: the receptor must be a list of chain strings"),
        (dict(ligand=[ok, ["MKT", ""]], receptor=[ok, ok]), r"sample 1 \(.*ligand.*\): the sequence is empty"),
        (dict(ligand=[ok, ok], receptor=[ok, ["MK1T"]]), r"sample 1 \(.*receptor.*\): \['1'\] are not amino-acid"),
        (dict(ligand=[ok, ok, ok], receptor=[ok, ok]), "sample 2 has no receptor"),
        (dict(ligand=[ok], receptor=[ok, ok]), "sample 1 has no ligand"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            processor(**kwargs)
    with pytest.raises(ValueError, match=f"sample 0 is a plain sequence .* architecture '{architecture}'"):
        processor(["MKTAYIAK"])
    with pytest.warns(UserWarning, match="2 non-amino-acid characters were read as X"):
        lenient = MetaEmbedProcessor.from_backbones(
            backbone_sets["one"], architecture=architecture, unknown_residues="x"
        )(ligand=[["MK1T"]], receptor=[["W*E"]])
    assert int(lenient["unit_mask"].sum()) == 7


def test_single_given_complexes_names_the_sample(backbone_sets):
    processor = MetaEmbedProcessor.from_backbones(backbone_sets["one"])
    with pytest.raises(ValueError, match="sample 0 is a ligand/receptor complex but architecture 'single'"):
        processor(ligand=[["MKT"]], receptor=[["WLE"]])
    model, pair_processor = build(backbone_sets["one"], "single")
    pair_batch = MetaEmbedProcessor.from_backbones(backbone_sets["one"], architecture="ec")(
        ligand=LIGANDS, receptor=RECEPTORS
    )
    with pytest.raises(ValueError, match="architecture 'single' got receptor segments"):
        model(**pair_batch)


def test_model_rejects_segments_that_do_not_fit_its_architecture(backbone_sets):
    make = {name: MetaEmbedProcessor.from_backbones(backbone_sets["one"], architecture=name) for name in ("ec", "hp")}
    hp_batch = make["hp"](ligand=LIGANDS, receptor=RECEPTORS)
    ec_batch = make["ec"](ligand=LIGANDS, receptor=RECEPTORS)
    for architecture in ("ec", "pad"):
        model, _ = build(backbone_sets["one"], architecture)
        with pytest.raises(ValueError, match="sample 0 has 2 ligand segments"):
            model(**hp_batch)
        without_indices = {k: v for k, v in ec_batch.items() if not k.startswith("segment_")}
        with pytest.raises(ValueError, match="needs `segment_sample_index` and `segment_side_index`"):
            model(**without_indices)
    sc_model, _ = build(backbone_sets["one"], "sc")
    with pytest.raises(ValueError, match="sample 0 has 2 segments; architecture 'sc' joins both sides"):
        sc_model(**ec_batch)
    hp_model, _ = build(backbone_sets["one"], "hp")
    keep = hp_batch["segment_side_index"] == 0  # drop every receptor chain
    ligand_only = {k: v[keep] for k, v in hp_batch.items()}
    with pytest.raises(ValueError, match="sample 0 has no receptor segment"):
        hp_model(**ligand_only)
    emptied = dict(hp_batch)
    emptied["unit_mask"] = hp_batch["unit_mask"].clone()
    emptied["unit_mask"][4] = 0
    with pytest.raises(ValueError, match=r"sample 1 \(receptor\): a segment has no real unit"):
        hp_model(**emptied)


# ------------------------------------------------------------------------------------ truncation of complexes


def test_too_long_complex_errors_naming_sample_and_side(backbone_sets):
    long = "A" * 70  # tiny backbones accept 64 residues
    processor = MetaEmbedProcessor.from_backbones(backbone_sets["two"], architecture="ec")
    with pytest.raises(ValueError, match=r"sample 1 \(receptor\): backbone 0 .* accepts at most 66 tokens"):
        processor(ligand=[["MKT"], ["MKT"]], receptor=[["WLE"], [long]])
    joined = MetaEmbedProcessor.from_backbones(backbone_sets["two"], architecture="sc")
    with pytest.raises(
        ValueError, match=r"sample 0 \(ligand and receptor joined\): backbone 0 .*\(3 chain\(s\) of 30\+10\+40 units\)"
    ):
        joined(ligand=[["M" * 30, "K" * 10]], receptor=[["W" * 40]])


def test_sc_truncation_cuts_every_chain_proportionally_and_keeps_both_sides(backbone_sets):
    processor = MetaEmbedProcessor.from_backbones(backbone_sets["two"], architecture="sc", truncation=True)
    with pytest.warns(UserWarning, match=r"truncation cut \d+ units from 1 inputs"):
        features = processor(ligand=[["M" * 30, "K" * 3]], receptor=[["W" * 60]], return_tensors=None)
    segment = {"input_ids": features["input_ids"][0][0], "num_units": len(features["unit_mask"][0][0])}
    tokens = processor.tokenizers[0].convert_ids_to_tokens(segment["input_ids"][0])
    assert len(tokens) <= 66
    runs = "".join(t if len(t) == 1 else "|" for t in tokens).strip("|").split("|")
    counts = {run[0]: len(run) for run in runs}
    assert set(counts) == {"M", "K", "W"}  # no chain, so no side, was dropped
    assert counts["K"] >= 1 and abs(counts["W"] / counts["M"] - 2) < 0.25  # same share cut from each chain
    assert segment["num_units"] == sum(counts.values())


def test_truncation_that_cannot_keep_every_chain_errors(tmp_path):
    import tiny_backbones

    short = tiny_backbones.make_tiny_esm(tmp_path / "esm", max_length=4)
    processor = MetaEmbedProcessor.from_backbones([short], architecture="sc", truncation=True)
    with pytest.raises(ValueError, match="too few for one unit of each of the 4 chains"):
        processor(ligand=[["MKT", "GS", "AA"]], receptor=[["WLE"]])
