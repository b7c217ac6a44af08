"""Property tests (hypothesis): invariances of the model and round trips of the processor on generated inputs.

Tiny models are built once per module; every property runs a few dozen small examples (no deadline, so a slow
shared machine does not fail them).
"""

import pytest
import tiny_backbones
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_metaembed import (
    MetaEmbedConfig,
    MetaEmbedForSequenceClassification,
    MetaEmbedModel,
    MetaEmbedProcessor,
    list_fusions,
)
from hf_metaembed.modeling.tokenization_metaembed import EXTRA_RESIDUES, STANDARD_RESIDUES

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_RESIDUES = 16
ATOL = 2e-5

residue_letters = st.sampled_from(STANDARD_RESIDUES + STANDARD_RESIDUES.lower() + EXTRA_RESIDUES)
proteins = st.text(residue_letters, min_size=1, max_size=MAX_RESIDUES)
protein_batches = st.lists(proteins, min_size=1, max_size=5)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    return tiny_backbones.make_all_tiny_backbones(tmp_path_factory.mktemp("properties"), max_length=MAX_RESIDUES)


@pytest.fixture(scope="module")
def protein_processor(folders) -> MetaEmbedProcessor:
    return MetaEmbedProcessor.from_backbones([folders["esm"], folders["prott5"]])


@pytest.fixture(scope="module")
def protein_model(folders) -> MetaEmbedForSequenceClassification:
    """The padding-sensitive parts together: cdme (packed BiLSTM), ConvBERT unit encoder (masked convolution),
    attention pooling."""
    return MetaEmbedForSequenceClassification.from_backbones(
        [folders["esm"], folders["prott5"]], fusion="cdme", unit_encoder="convbert", pooling="attention", num_labels=2,
        convbert_num_heads=2,
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def text_processor(folders) -> MetaEmbedProcessor:
    return MetaEmbedProcessor.from_backbones([folders["bert"], folders["roberta"]])


@pytest.fixture(scope="module")
def text_model(folders) -> MetaEmbedModel:
    return MetaEmbedModel.from_backbones([folders["bert"], folders["roberta"]], fusion="dme").eval()


def _per_sample(model, processor, sequences: list[str]) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model(**processor(sequences)).logits)


# --------------------------------------------------------------------------------------------- model invariances


@FAST
@given(sequences=protein_batches, order=st.randoms(use_true_random=False))
def test_padding_and_batch_composition_do_not_change_outputs(sequences, order, protein_model, protein_processor):
    """Each sample's logits are the same alone (no padding) and in a shuffled batch (padded to the longest)."""
    alone = [_per_sample(protein_model, protein_processor, [sequence])[0] for sequence in sequences]
    permutation = list(range(len(sequences)))
    order.shuffle(permutation)
    together = _per_sample(protein_model, protein_processor, [sequences[i] for i in permutation])
    for position, index in enumerate(permutation):
        torch.testing.assert_close(together[position], alone[index], atol=ATOL, rtol=1e-4)


@FAST
@given(sequences=protein_batches, extra_padding=st.integers(1, 6))
def test_extra_padding_columns_change_nothing(sequences, extra_padding, protein_model, protein_processor):
    batch = protein_processor(sequences)
    padded = dict(batch)
    for key, fill in (("input_ids", 1), ("attention_mask", 0), ("token_unit_index", -1), ("unit_mask", 0)):
        tensor = batch[key]
        extra = tensor.new_full((*tensor.shape[:-1], extra_padding), fill)
        padded[key] = torch.cat([tensor, extra], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(protein_model(**padded).logits, protein_model(**batch).logits, atol=ATOL, rtol=1e-4)


@pytest.fixture(scope="module")
def fusion_models() -> dict[tuple[str, str], MetaEmbedModel]:
    """Every fusion with both gatings, over random-weight ESM (16) and ProtT5-style (16) backbone configs; fed
    precomputed backbone states, so no backbone runs."""
    configs = [
        tiny_backbones.build_tiny_esm(max_length=MAX_RESIDUES)[0].config.to_dict(),
        tiny_backbones.build_tiny_prott5(max_length=MAX_RESIDUES)[0].config.to_dict(),
    ]
    return {
        (fusion, gating): MetaEmbedModel(
            MetaEmbedConfig(
                backbone_configs=configs, backbone_unit_types=["residue"] * 2, fusion=fusion, gating=gating
            )
        ).eval()
        for fusion in list_fusions()
        for gating in ("softmax", "sigmoid")
    }


@FAST
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_fusion_weights_are_in_range_and_softmax_weights_sum_to_one(lengths, seed, scale, fusion_models):
    generator = torch.Generator().manual_seed(seed)
    units = max(lengths)
    unit_mask = (torch.arange(units) < torch.tensor(lengths).unsqueeze(1)).long()
    states = [torch.randn(len(lengths), units, 16, generator=generator) * scale for _ in range(2)]
    real = unit_mask.bool()
    for (fusion, gating), model in fusion_models.items():
        with torch.no_grad():
            out = model(backbone_states=states, unit_mask=unit_mask)
        weights = out.fusion_weights
        assert torch.isfinite(out.last_hidden_state).all(), fusion
        assert ((weights >= 0) & (weights <= 1)).all(), (fusion, gating)
        assert (weights[~real] == 0).all(), (fusion, gating)
        if gating == "softmax" or fusion in ("concat", "mean"):
            sums = weights[real].sum(-1)
            torch.testing.assert_close(sums, torch.ones_like(sums), msg=f"{fusion} weights do not sum to 1")


def _off_initial_values(model: MetaEmbedForSequenceClassification) -> MetaEmbedForSequenceClassification:
    """Move every trainable weight off its initial value: at initialisation (std 0.02, a bias-free feed-forward block)
    `hp` logits are about 1e-5, below `ATOL`, so an invariance would hold whatever the model did."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def hp_models(folders) -> dict:
    """`hp` with mean chain pooling, per side combination, with separate ligand and receptor poolers (the default)
    and with shared ones."""
    models = {
        (combine, separate): _off_initial_values(
            MetaEmbedForSequenceClassification.from_backbones(
                [folders["esm"]],
                architecture="hp",
                chain_pooling="mean",
                side_combine=combine,
                hp_separate_side_poolers=separate,
                num_labels=1,
            )
        ).eval()
        for combine in ("concat", "add", "mean")
        for separate in (True, False)
    }
    return {**models, "processor": MetaEmbedProcessor.from_backbones([folders["esm"]], architecture="hp")}


@FAST
@given(
    ligand=st.lists(proteins, min_size=1, max_size=3),
    receptor=st.lists(proteins, min_size=1, max_size=3),
    order=st.randoms(use_true_random=False),
)
def test_hp_with_mean_chain_pooling_ignores_chain_order(ligand, receptor, order, hp_models):
    processor = hp_models["processor"]
    shuffled_ligand, shuffled_receptor = list(ligand), list(receptor)
    order.shuffle(shuffled_ligand)
    order.shuffle(shuffled_receptor)
    for combine in ("concat", "add", "mean"):
        for separate in (True, False):
            model = hp_models[combine, separate]
            with torch.no_grad():
                original = model(**processor(ligand=[ligand], receptor=[receptor])).logits
                reordered = model(**processor(ligand=[shuffled_ligand], receptor=[shuffled_receptor])).logits
                torch.testing.assert_close(reordered, original, atol=ATOL, rtol=1e-4)
                if combine != "concat" and not separate:
                    # symmetric side combination over shared poolers: swapping the sides changes nothing either
                    swapped = model(**processor(ligand=[receptor], receptor=[ligand])).logits
                    torch.testing.assert_close(swapped, original, atol=ATOL, rtol=1e-4)


@pytest.fixture(scope="module")
def windowed_esm(folders) -> tuple[MetaEmbedModel, MetaEmbedProcessor]:
    model = MetaEmbedModel.from_backbones([folders["esm"]], fusion="concat").eval()
    return model, MetaEmbedProcessor.from_backbones([folders["esm"]], long_sequences="window")


@FAST
@given(
    length=st.integers(1, 60),
    window=st.integers(2, MAX_RESIDUES),
    overlap_share=st.floats(0, 0.9),
    combine=st.sampled_from(["center", "mean", "first"]),
    seed=st.integers(0, 2**16),
)
def test_windows_keep_one_state_per_residue_and_match_a_standalone_first_window(
    length, window, overlap_share, combine, seed, windowed_esm
):
    model, processor = windowed_esm
    overlap = min(int(window * overlap_share), window - 1)
    generator = torch.Generator().manual_seed(seed)
    sequence = "".join(STANDARD_RESIDUES[i] for i in torch.randint(20, (length,), generator=generator))
    try:
        model.config.window_size, model.config.window_overlap, model.config.window_combine = window, overlap, combine
        with torch.no_grad():
            stitched = model(**processor([sequence])).last_hidden_state[0]
    finally:
        model.config.window_size, model.config.window_overlap = None, None
    with torch.no_grad():
        first = model(**processor([sequence[:window]])).last_hidden_state[0]
    assert stitched.shape == (length, 16) and torch.isfinite(stitched).all()
    # units the second window does not reach come from the first window alone, whatever the combine rule (the
    # second window starts one stride in, or earlier when it is also the last one, flush with the end)
    alone = min(window - overlap, length - window) if length > window else length
    torch.testing.assert_close(stitched[:alone], first[:alone], atol=ATOL, rtol=1e-4)


# --------------------------------------------------------------------------------------------- processor round trips


@FAST
@given(sequences=protein_batches)
def test_processor_round_trip_on_residue_strings(sequences, protein_processor):
    batch = protein_processor(sequences)
    assert batch["unit_mask"].sum(1).tolist() == [len(s) for s in sequences]
    esm = protein_processor.tokenizers[0]
    for row, sequence in enumerate(sequences):
        for backbone in range(2):
            units = batch["token_unit_index"][row, backbone]
            assert sorted(set(units[units >= 0].tolist())) == list(range(len(sequence)))
        # ESM reads one token per residue: the ids spell the upper-cased sequence back
        ids = batch["input_ids"][row, 0][batch["token_unit_index"][row, 0] >= 0]
        assert "".join(esm.convert_ids_to_tokens(ids.tolist())) == sequence.upper()


any_unicode = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


@FAST
@given(text=any_unicode)
def test_text_processor_and_model_on_arbitrary_unicode(text, text_processor, text_model):
    """Any Unicode string gives words (and a forward pass that runs) or a documented error naming the sample."""
    try:
        batch = text_processor([text])
    except (ValueError, TypeError) as error:
        assert "sample 0" in str(error)
        return
    assert int(batch["unit_mask"].sum()) == len(text.split())
    with torch.no_grad():
        out = text_model(**batch)
    assert torch.isfinite(out.last_hidden_state).all()


@FAST
@given(text=any_unicode)
def test_protein_processor_on_arbitrary_unicode(text, protein_processor):
    """Any Unicode string is a protein (units = residues after whitespace is removed) or a documented error."""
    try:
        batch = protein_processor([text])
    except (ValueError, TypeError) as error:
        assert "sample 0" in str(error)
        return
    assert int(batch["unit_mask"].sum()) == len("".join(text.split()))


@FAST
@given(item=st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.text(max_size=3), max_size=2)))
def test_non_string_items_are_type_errors_naming_the_sample(item, protein_processor, text_processor):
    for processor in (protein_processor, text_processor):
        with pytest.raises(TypeError, match=r"sample 1: expected a string, got"):
            processor(["MKTA", item])
