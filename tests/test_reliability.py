"""Reliability (issue 5): long sequences in sliding windows, hostile inputs, crash-safe saving, safe loading and
determinism.

Backbones here are tiny and accept only 16 residues (ESM-2 style: 18 tokens with <cls> and <eos>), so long inputs
are cheap to make.
"""

import math
from contextlib import contextmanager

import pytest
import tiny_backbones
import torch

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.windowing import plan_windows

MAX_RESIDUES = 16
PROTEIN_FAMILIES = ("esm", "prott5", "ankh")
TEXT_FAMILIES = ("bert", "roberta")
LONG_PROTEIN = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ"  # 66 residues
SHORT_PROTEINS = ["MKTAYIAKQRQISF", "GSHW", "MVLSPADKTNVKAA"]
LONG_TEXT = " ".join(["the movie was not very good and the plot was boring so we hate it"] * 3)  # 48 words
SHORT_TEXTS = ["the movie is good", "a very bad film !", "great"]


@pytest.fixture(scope="module")
def short_backbones(tmp_path_factory) -> dict[str, str]:
    """Every tiny family with a 16-unit limit (BERT/RoBERTa: 16 tokens with [CLS]/[SEP] or <s>/</s>)."""
    return tiny_backbones.make_all_tiny_backbones(tmp_path_factory.mktemp("short"), max_length=MAX_RESIDUES)


@pytest.fixture(scope="module")
def models(short_backbones) -> dict[str, MetaEmbedModel]:
    """Per family a one-backbone model with concat fusion, so `last_hidden_state` is that backbone's unit states."""
    return {
        family: MetaEmbedModel.from_backbones([folder], fusion="concat").eval()
        for family, folder in short_backbones.items()
    }


@pytest.fixture(scope="module")
def window_processors(short_backbones) -> dict[str, MetaEmbedProcessor]:
    return {
        family: MetaEmbedProcessor.from_backbones([folder], long_sequences="window")
        for family, folder in short_backbones.items()
    }


@contextmanager
def policy(model: MetaEmbedModel, **settings):
    """Give a model a window policy (or other config settings) for the duration of a block."""
    saved = {name: getattr(model.config, name) for name in settings}
    for name, value in settings.items():
        setattr(model.config, name, value)
    try:
        yield model
    finally:
        for name, value in saved.items():
            setattr(model.config, name, value)


def _inputs(family: str) -> tuple[list[str], str]:
    return (SHORT_TEXTS, LONG_TEXT) if family in TEXT_FAMILIES else (SHORT_PROTEINS, LONG_PROTEIN)


def _units(family: str, sequence: str) -> list[str]:
    return sequence.split() if family in TEXT_FAMILIES else list(sequence)


def _join(family: str, units: list[str]) -> str:
    return " ".join(units) if family in TEXT_FAMILIES else "".join(units)


# ------------------------------------------------------------------------------------------------- long sequences


@pytest.mark.parametrize("family", PROTEIN_FAMILIES + TEXT_FAMILIES)
def test_window_covering_the_whole_sequence_matches_the_full_run(family, models, window_processors):
    model = models[family]
    batch = window_processors[family](_inputs(family)[0])
    full = model(**batch).last_hidden_state
    for combine in ("center", "mean", "first"):
        with policy(model, window_size=40, window_overlap=10, window_combine=combine):
            windowed = model(**batch).last_hidden_state
        torch.testing.assert_close(windowed, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["esm", "bert"])
def test_covering_window_keeps_special_tokens_at_sequence_level(family, short_backbones, window_processors):
    folder = short_backbones[family]
    batch = window_processors[family](_inputs(family)[0])
    model = MetaEmbedModel.from_backbones([folder], level="sequence", pool_special_tokens=True, layers=["mix"]).eval()
    full = model(**batch).pooler_output
    with policy(model, window_size=40):
        windowed = model(**batch).pooler_output
    torch.testing.assert_close(windowed, full, atol=1e-5, rtol=1e-5)


def _reference_windows(units: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Window unit ranges written out plainly: a stride of size - overlap, the last window flush with the end."""
    if units <= size:
        return [(0, units)]
    stride, starts = size - overlap, [0]
    while starts[-1] + size < units:
        starts.append(min(starts[-1] + stride, units - size))
    return [(start, start + size) for start in starts]


def _reference_stitch(states: list[torch.Tensor], windows, units: int, combine: str) -> torch.Tensor:
    """Per unit, combine the states each window's standalone run gave it, by the documented rule."""
    rows = []
    for unit in range(units):
        seen = [(k, states[k][unit - a]) for k, (a, b) in enumerate(windows) if a <= unit < b]
        if combine == "mean":
            rows.append(torch.stack([state for _, state in seen]).mean(0))
            continue
        if combine == "first":
            rows.append(seen[0][1])
            continue

        def room(k: int, unit: int = unit) -> float:  # units to the nearest edge that cut the sequence
            a, b = windows[k]
            left = unit - a if a > 0 else math.inf
            right = b - 1 - unit if b < units else math.inf
            return min(left, right)

        best = max(seen, key=lambda item: (room(item[0]), -item[0]))
        rows.append(best[1])
    return torch.stack(rows)


@pytest.mark.parametrize("family", PROTEIN_FAMILIES + TEXT_FAMILIES)
def test_long_sequence_stitches_standalone_window_runs(family, models, window_processors):
    """Each window, run on its own through the processor and the backbone, gives the states that are stitched."""
    model, processor = models[family], window_processors[family]
    _, long_input = _inputs(family)
    size, overlap = (MAX_RESIDUES, 5) if family in PROTEIN_FAMILIES else (10, 3)  # 10 words fit in 16 tokens
    units = _units(family, long_input)
    windows = _reference_windows(len(units), size, overlap)
    assert len(windows) >= 4
    window_states = list(model(**processor([_join(family, units[a:b]) for a, b in windows])).last_hidden_state)
    batch = processor([long_input])
    for combine in ("center", "mean", "first"):
        with policy(model, window_size=size, window_overlap=overlap, window_combine=combine):
            stitched = model(**batch).last_hidden_state
        assert stitched.shape == (1, len(units), 16)
        expected = _reference_stitch(window_states, windows, len(units), combine)
        torch.testing.assert_close(stitched[0], expected, atol=1e-5, rtol=1e-5, msg=f"window_combine={combine}")


def test_long_and_short_sequences_batch_together_and_match_their_own_runs(models, window_processors):
    model, processor = models["esm"], window_processors["esm"]
    sequences = [SHORT_PROTEINS[0], LONG_PROTEIN, SHORT_PROTEINS[1], LONG_PROTEIN[:40]]
    with policy(model, window_size=MAX_RESIDUES):
        together = model(**processor(sequences))
        assert together.last_hidden_state.shape == (4, len(LONG_PROTEIN), 16)
        assert together.unit_mask.sum(1).tolist() == [len(s) for s in sequences]
        for row, sequence in enumerate(sequences):
            alone = model(**processor([sequence])).last_hidden_state[0]
            torch.testing.assert_close(together.last_hidden_state[row, : len(sequence)], alone, atol=1e-5, rtol=1e-5)
            assert (together.last_hidden_state[row, len(sequence) :] == 0).all()


def test_windows_of_a_batch_run_through_the_backbone_as_one_batch(models, window_processors):
    model = models["esm"]
    calls = []
    hook = model.backbone_0.register_forward_hook(lambda module, args, output: calls.append(args))
    try:
        with policy(model, window_size=MAX_RESIDUES, window_overlap=4):
            model(**window_processors["esm"]([LONG_PROTEIN, LONG_PROTEIN[:30], "MKT"]))
    finally:
        hook.remove()
    assert len(calls) == 1


def test_long_sequence_trains_through_windows(short_backbones, window_processors):
    model = MetaEmbedForSequenceClassification.from_backbones(
        [short_backbones["esm"]], fusion="dme", num_labels=1, window_size=MAX_RESIDUES, window_overlap=4
    )
    model.metaembed.unfreeze_backbones()
    out = model(**window_processors["esm"]([LONG_PROTEIN, "MKTAY"]), labels=torch.tensor([1.0, 2.0]))
    out.loss.backward()
    embeddings = model.metaembed.backbone_0.embeddings.word_embeddings.weight
    assert torch.isfinite(out.loss) and embeddings.grad is not None and embeddings.grad.abs().sum() > 0


def test_multi_chain_segments_keep_separators_inside_windows(short_backbones):
    """`sc` joins chains with the backbone's separator: windows that span a chain boundary contain it."""
    folder = short_backbones["esm"]
    processor = MetaEmbedProcessor.from_backbones([folder], architecture="sc", long_sequences="window")
    batch = processor(ligand=[["MKTAYIAKQR"]], receptor=[["GSHWLEERLG"]])
    mask, units = batch["attention_mask"][:, 0], batch["token_unit_index"][:, 0]
    assert mask.shape[1] == 23  # <cls> 10 residues <eos> 10 residues <eos>
    plan = plan_windows(units, mask, 8, 2)
    separator = int((units[0] == -1).nonzero().flatten()[1])  # the first -1 after <cls>
    spans = [(int(a), int(b)) for a, b in zip(plan["token_start"], plan["token_end"])]
    assert any(a <= separator < b for a, b in spans)
    assert all(units[0, a] >= 0 and units[0, b - 1] >= 0 for a, b in spans)  # windows start and end on units

    model = MetaEmbedModel.from_backbones([folder], architecture="sc").eval()
    batch = processor(ligand=[["MKTAYIA"], ["MK"]], receptor=[["GSHWLEE"], ["GSH", "WL"]])
    plain = model(**batch).pooler_output
    with policy(model, window_size=64):
        torch.testing.assert_close(model(**batch).pooler_output, plain, atol=1e-5, rtol=1e-5)


def test_window_size_per_backbone(short_backbones, models, window_processors):
    """ESM reads in windows while ProtT5 (relative positions, no hard limit) reads the whole long segment."""
    folders = [short_backbones["esm"], short_backbones["prott5"]]
    processor = MetaEmbedProcessor.from_backbones(folders, long_sequences="window")
    model = MetaEmbedModel.from_backbones(folders, fusion="concat", window_size=[MAX_RESIDUES, None]).eval()
    states = model(**processor([LONG_PROTEIN]), output_backbone_states=True).backbone_states
    whole = models["prott5"](**window_processors["prott5"]([LONG_PROTEIN])).last_hidden_state
    torch.testing.assert_close(states[1], whole, atol=1e-5, rtol=1e-5)
    assert states[0].shape == (1, len(LONG_PROTEIN), 16)


def test_too_long_input_is_a_clear_error_by_default(short_backbones):
    processor = MetaEmbedProcessor.from_backbones([short_backbones["esm"]])
    with pytest.raises(ValueError) as error:
        processor(["MKTAY", LONG_PROTEIN])
    message = str(error.value)
    for part in (
        "sample 1",
        "backbone 0",
        short_backbones["esm"],
        "at most 18 tokens",
        "window_size",
        "long_sequences",
    ):
        assert part in message


def test_model_without_window_policy_names_the_limit(models, window_processors):
    """A processor that lets long inputs through, with a model that has no window policy: an error, not an index
    error inside BERT's position table."""
    with pytest.raises(ValueError, match=r"segment 0: backbone 0 .* reads at most 16 tokens.*window_size"):
        models["bert"](**window_processors["bert"]([LONG_TEXT]))


def test_window_longer_than_the_backbone_accepts_is_a_clear_error(models, window_processors):
    with policy(models["bert"], window_size=30, window_overlap=0):
        with pytest.raises(ValueError, match=r"segment 0: a window of 30 units needs 32 tokens .* at most 16; lower"):
            models["bert"](**window_processors["bert"]([LONG_TEXT]))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"window_size": 0}, "window_size of backbone 0 must be a positive number"),
        ({"window_size": 8, "window_overlap": 8}, "window_overlap must be a whole number of units from 0 to"),
        ({"window_size": 8, "window_overlap": -1}, "window_overlap must be"),
        ({"window_size": [8, 8]}, "window_size lists 2 entries for 1 backbones"),
        ({"window_size": 8, "window_combine": "max"}, "unknown window_combine 'max'; choose one of: center, mean"),
        ({"window_overlap": 4}, "window_overlap=4 needs a window_size"),
    ],
)
def test_impossible_window_policies_are_rejected(settings, message, short_backbones):
    backbone = tiny_backbones.build_tiny_esm(max_length=MAX_RESIDUES)[0]
    with pytest.raises(ValueError, match=message):
        MetaEmbedConfig(backbone_configs=[backbone.config.to_dict()], backbone_unit_types=["residue"], **settings)


def test_window_policy_and_processor_setting_survive_save_and_load(short_backbones, tmp_path):
    model = MetaEmbedModel.from_backbones(
        [short_backbones["esm"]], window_size=[12], window_overlap=3, window_combine="mean"
    )
    processor = MetaEmbedProcessor.from_backbones([short_backbones["esm"]], long_sequences="window")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = MetaEmbedConfig.from_pretrained(tmp_path)
    assert (config.window_size, config.window_overlap, config.window_combine) == ([12], 3, "mean")
    assert MetaEmbedProcessor.from_pretrained(tmp_path).long_sequences == "window"
    with pytest.raises(ValueError, match="unknown long_sequences 'cut'; choose one of: error, window"):
        MetaEmbedProcessor.from_backbones([short_backbones["esm"]], long_sequences="cut")
