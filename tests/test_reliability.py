"""Reliability (issue 5): long sequences in sliding windows, hostile inputs, crash-safe saving, safe loading and
determinism.

Backbones here are tiny and accept only 16 residues (ESM-2 style: 18 tokens with <cls> and <eos>), so long inputs
are cheap to make.
"""

import ast
import json
import math
import os
import shutil
import signal
import struct
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import tiny_backbones
import torch
from torch import nn
from transformers import set_seed

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.modeling.windowing import plan_windows

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


# ------------------------------------------------------------------------------------------------- hostile inputs


@pytest.fixture(scope="module")
def protein_processor(short_backbones) -> MetaEmbedProcessor:
    return MetaEmbedProcessor.from_backbones([short_backbones["esm"], short_backbones["prott5"]])


@pytest.fixture(scope="module")
def text_processor(short_backbones) -> MetaEmbedProcessor:
    return MetaEmbedProcessor.from_backbones([short_backbones["bert"], short_backbones["roberta"]])


@pytest.mark.parametrize(
    ("sequences", "error", "message"),
    [
        (["MKTA", ""], ValueError, r"sample 1: the sequence is empty or whitespace only"),
        (["MKTA", " \n\t "], ValueError, r"sample 1: the sequence is empty or whitespace only"),
        (["MKTA", None], TypeError, r"sample 1: expected a string, got NoneType"),
        ([float("nan")], TypeError, r"sample 0: expected a string, got float \(nan\)"),
        ([b"MKTA"], TypeError, r"sample 0: expected a string, got bytes"),
        ([["MKTA"]], TypeError, r"sample 0: expected a string, got list"),
        (["MKTA", "MKT1A"], ValueError, r"sample 1: \['1'\] are not amino-acid letters .* unknown_residues='x'"),
        (["Straße"], ValueError, r"sample 0: \['ß'\] are not amino-acid letters"),
        (["MKTA", "the movie was not good"], ValueError, r"sample 1: this looks like text, not a protein"),
        (["MK\ud800TA"], ValueError, r"sample 0: character 2 .* lone surrogate"),
        ([], ValueError, r"the batch is empty"),
        (7, TypeError, r"`sequences` must be a list, got int"),
    ],
)
def test_hostile_protein_inputs_name_the_sample(sequences, error, message, protein_processor):
    with pytest.raises(error, match=message):
        protein_processor(sequences)


@pytest.mark.parametrize(
    ("ligand", "receptor", "message"),
    [
        ([["MKTA"], ["GSHW"]], [["MVLS"]], r"ligand lists 2 complexes but receptor lists 1: sample 1 has no receptor"),
        ([["MKTA"]], ["GSHW"], r"sample 0: the receptor must be a list of chain strings"),
        ([["MKTA"]], [[]], r"sample 0: the receptor has no chains"),
        ([["MKTA", None]], [["GSHW"]], r"sample 0 \(ligand\): expected a string, got NoneType"),
        ([["MKTA"]], [["GSHW", "  "]], r"sample 0 \(receptor\): the sequence is empty"),
        ("MKTA", [["GSHW"]], r"`ligand` must be a list, got str"),
    ],
)
def test_hostile_complex_inputs_name_the_sample(ligand, receptor, message, short_backbones):
    processor = MetaEmbedProcessor.from_backbones([short_backbones["esm"]], architecture="ec")
    with pytest.raises((ValueError, TypeError), match=message):
        processor(ligand=ligand, receptor=receptor)


def test_documented_protein_normalisations(protein_processor):
    reference = protein_processor(["MKTAYIAKQRQISFV"])
    for variant in ("mktayiakqrqisfv", "M K T A Y I A K Q R Q I S F V", "MKTAYIAKQR QISFV", "MKTAY\nIAKQR\nQISFV"):
        batch = protein_processor([variant])
        assert torch.equal(batch["input_ids"], reference["input_ids"]), variant
        assert batch["unit_mask"].sum() == 15
    with pytest.warns(UserWarning, match="2 non-amino-acid characters were read as X"):
        lenient = MetaEmbedProcessor.from_backbones(
            [t.name_or_path for t in protein_processor.tokenizers], unknown_residues="x"
        )(["MKT*A1"])
    assert lenient["unit_mask"].sum() == 6


def test_text_backbones_read_anything_as_words(text_processor):
    batch = text_processor(["MKTAYIAKQR", "the movie , was good", "🙂 é \x00 ok"])
    assert batch["unit_mask"].sum(1).tolist() == [1, 5, 4]


def _label_model(short_backbones, **settings):
    return MetaEmbedForSequenceClassification.from_backbones([short_backbones["esm"]], fusion="mean", **settings)


@pytest.mark.parametrize(
    ("settings", "labels", "message"),
    [
        ({"num_labels": 1}, torch.tensor([1.0, float("nan")]), r"labels of samples \[1\] are NaN or infinite"),
        ({"num_labels": 1}, torch.tensor([float("inf"), 2.0]), r"labels of samples \[0\] are NaN or infinite"),
        ({"num_labels": 1}, torch.tensor([1.0, 2.0, 3.0]), r"labels hold 3 entries but the batch has 2 samples"),
        ({"num_labels": 3}, torch.tensor([0, 3]), r"labels of samples \[1\] hold class ids \[3\] outside 0..2"),
        ({"num_labels": 3}, torch.tensor([-1, 1]), r"labels of samples \[0\] hold class ids \[-1\] outside 0..2"),
    ],
)
def test_bad_labels_are_clear_errors(settings, labels, message, short_backbones, protein_processor):
    model = _label_model(short_backbones, **settings)
    batch = MetaEmbedProcessor.from_backbones([short_backbones["esm"]])(["MKTA", "GSHWLE"])
    with pytest.raises(ValueError, match=message):
        model(**batch, labels=labels)


def test_bad_token_labels_are_clear_errors(short_backbones):
    from hf_metaembed import MetaEmbedForTokenClassification

    model = MetaEmbedForTokenClassification.from_backbones([short_backbones["esm"]], num_labels=2)
    batch = MetaEmbedProcessor.from_backbones([short_backbones["esm"]])(["MKTA", "GS"])
    labels = torch.tensor([[0, 1, 5, 0], [1, 0, -100, -100]])
    with pytest.raises(ValueError, match=r"labels of segments \[0\] hold class ids \[5\] outside 0..1"):
        model(**batch, labels=labels)


def test_hand_made_tensors_fail_with_messages_not_index_errors(models, window_processors):
    model = models["esm"]
    batch = dict(window_processors["esm"](["MKTA", "GSHW"]))
    with pytest.raises(ValueError, match="the batch holds no segments"):
        model(**{key: value[:0] for key, value in batch.items()})
    wrong_ids = batch["input_ids"].clone()
    wrong_ids[1, 0, 2] = 999
    with pytest.raises(ValueError, match=r"segment 1: token id 999 is outside the vocabulary of backbone 0"):
        model(**{**batch, "input_ids": wrong_ids})
    with pytest.raises(ValueError, match=r"token_unit_index of backbone 0 points at unit 3 but unit_mask has 2"):
        model(**{**batch, "unit_mask": batch["unit_mask"][:, :2]})


# ------------------------------------------------------------------------------------------ crash-safe saving


def _fork_writer(write) -> int:
    """Run `write()` in a forked child process (a copy of this one: nothing to import again); return its pid.

    The child never comes back into pytest: it ends with `os._exit` whatever happens.
    """
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            torch.set_num_threads(1)  # no OpenMP thread pool in the child of a forked process
            write()
        except BaseException:  # noqa: BLE001 - any failure is reported through the exit code
            code = 1
        finally:
            os._exit(code)
    return pid


@pytest.fixture(scope="module")
def saved_v1(short_backbones, tmp_path_factory):
    """A model and processor saved once (version 1), with reference outputs."""
    folder = tmp_path_factory.mktemp("crash") / "model"
    model = MetaEmbedForSequenceClassification.from_backbones(
        [short_backbones["esm"], short_backbones["ankh"]], fusion="dme", num_labels=1
    ).eval()
    processor = MetaEmbedProcessor.from_backbones([short_backbones["esm"], short_backbones["ankh"]])
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    batch = processor(SHORT_PROTEINS)
    with torch.no_grad():
        logits = model(**batch).logits
    return folder, batch, logits


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to start a writer process cheaply")
def test_killed_model_writer_leaves_the_previous_save_loadable(saved_v1, tmp_path, monkeypatch):
    import transformers.modeling_utils as modeling_utils

    folder, batch, logits = saved_v1
    version_2 = MetaEmbedForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        for parameter in version_2.parameters():
            parameter.add_(1.0)
    flag = tmp_path / "writing"
    real_save = modeling_utils.safe_save_file

    def half_written(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        flag.touch()
        time.sleep(60)  # killed here, in the middle of writing the weights

    monkeypatch.setattr(modeling_utils, "safe_save_file", half_written)
    pid = _fork_writer(lambda: version_2.save_pretrained(folder))
    monkeypatch.undo()
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.05)
        assert flag.exists(), "the writer never started writing the weights"
    finally:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    leftovers = [entry for entry in os.listdir(folder.parent) if ".saving-" in entry]
    assert leftovers, "the killed writer should have been writing to a staging folder"
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, logits)
    # the next save on this machine clears what the dead writer left behind
    reloaded.save_pretrained(folder)
    assert not [entry for entry in os.listdir(folder.parent) if ".saving-" in entry]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to start a writer process cheaply")
def test_processor_writer_dying_after_its_first_tokenizer_leaves_the_previous_save(saved_v1):
    folder, batch, _ = saved_v1
    processor = MetaEmbedProcessor.from_pretrained(folder)
    processor.truncation = True

    def die_at_second_tokenizer():
        type(processor.tokenizers[1]).save_pretrained = lambda *args, **kwargs: os._exit(3)
        processor.save_pretrained(folder)

    _, status = os.waitpid(_fork_writer(die_at_second_tokenizer), 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    reloaded = MetaEmbedProcessor.from_pretrained(folder)
    assert reloaded.truncation is False
    assert torch.equal(reloaded(SHORT_PROTEINS)["input_ids"], batch["input_ids"])


def test_resave_replaces_files_and_keeps_the_other_writers_files(saved_v1, short_backbones, tmp_path):
    """Saving a model into a folder that holds a processor keeps the processor; a new save removes weight shards of
    an older layout, and a processor with fewer backbones removes the tokenizer folders it no longer has."""
    folder, _, _ = saved_v1
    target = tmp_path / "resave"
    shutil.copytree(folder, target)
    model = MetaEmbedForSequenceClassification.from_pretrained(target)
    model.save_pretrained(target, max_shard_size="20KB")
    assert (target / "model.safetensors.index.json").exists() and not (target / "model.safetensors").exists()
    model.save_pretrained(target)
    assert sorted(p.name for p in target.glob("model*.safetensors*")) == ["model.safetensors"]
    assert (target / "tokenizer_1").is_dir()
    MetaEmbedProcessor.from_backbones([short_backbones["esm"]]).save_pretrained(target)
    assert not (target / "tokenizer_1").exists()
    assert MetaEmbedProcessor.from_pretrained(target).unit_types == ["residue"]
    MetaEmbedForSequenceClassification.from_pretrained(target)


# ------------------------------------------------------------------------------------------------- safe loading


def test_pickle_only_folder_is_refused_unless_allowed(saved_v1, tmp_path):
    from safetensors.torch import load_file

    folder, batch, logits = saved_v1
    target = tmp_path / "pickle"
    shutil.copytree(folder, target)
    torch.save(load_file(target / "model.safetensors"), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    with pytest.raises(OSError, match=r"no safetensors weights .* allow_pickle=True"):
        MetaEmbedForSequenceClassification.from_pretrained(target)
    with pytest.raises(ValueError, match=r"use_safetensors=False would load pickle weights.*allow_pickle=True"):
        MetaEmbedForSequenceClassification.from_pretrained(target, use_safetensors=False)
    trusted = MetaEmbedForSequenceClassification.from_pretrained(target, allow_pickle=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(trusted(**batch).logits, logits)


def test_pickle_only_backbone_is_refused_by_from_backbones_unless_allowed(short_backbones, tmp_path):
    from safetensors.torch import load_file

    target = tmp_path / "esm_pickle_only"
    shutil.copytree(short_backbones["esm"], target)
    torch.save(load_file(target / "model.safetensors"), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    with pytest.raises(OSError, match=r"backbone 0 .*safetensors.*allow_pickle=True"):
        MetaEmbedModel.from_backbones([str(target)])
    with pytest.raises(ValueError, match=r"allow_pickle=True"):
        MetaEmbedModel.from_backbones([str(target)], backbone_kwargs={"use_safetensors": False})
    trusted = MetaEmbedModel.from_backbones([str(target)], allow_pickle=True).backbone_0.state_dict()
    reference = MetaEmbedModel.from_backbones([short_backbones["esm"]]).backbone_0.state_dict()
    assert trusted.keys() == reference.keys()
    assert all(torch.equal(trusted[key], reference[key]) for key in reference)


@pytest.fixture
def no_real_build(monkeypatch):
    """Record the default device whenever a backbone is built: checks must fail before anything real is made."""
    import hf_metaembed.modeling.backbones as backbones

    devices = []
    real_build = backbones.build_backbone

    def recording_build(config):
        devices.append(torch.empty(0).device.type)
        return real_build(config)

    monkeypatch.setattr(backbones, "build_backbone", recording_build)  # what the model's construction calls
    return devices


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) - 100])
    elif how == "header length":
        path.write_bytes(struct.pack("<Q", 10**12) + data[8:])
    elif how == "header json":
        path.write_bytes(data[:8] + b"\xff" * 16 + data[24:])
    else:
        path.write_bytes(data[:5])


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", r"truncated or corrupted: its header describes \d+ bytes of tensor data but the file holds"),
        ("header length", r"truncated or corrupted: its header claims"),
        ("header json", r"truncated or corrupted: its header is not valid JSON"),
        ("stub", r"truncated or corrupted: it holds only 5 bytes"),
    ],
)
def test_damaged_weights_fail_before_the_model_is_built(how, message, saved_v1, tmp_path, no_real_build):
    folder, _, _ = saved_v1
    target = tmp_path / "damaged"
    shutil.copytree(folder, target)
    _damage(target / "model.safetensors", how)
    with pytest.raises(ValueError, match=message) as error:
        MetaEmbedForSequenceClassification.from_pretrained(target)
    assert "model.safetensors" in str(error.value) and "save the model again" in str(error.value)
    assert no_real_build == []


def test_damaged_or_missing_shard_is_named(saved_v1, tmp_path, no_real_build):
    folder, _, _ = saved_v1
    target = tmp_path / "sharded"
    shutil.copytree(folder, target)
    MetaEmbedForSequenceClassification.from_pretrained(folder).save_pretrained(target, max_shard_size="20KB")
    shards = sorted(target.glob("model-*.safetensors"))
    assert len(shards) > 1
    no_real_build.clear()
    _damage(shards[-1], "truncated")
    with pytest.raises(ValueError, match=rf"{shards[-1].name} is truncated or corrupted"):
        MetaEmbedForSequenceClassification.from_pretrained(target)
    shards[-1].unlink()
    with pytest.raises(ValueError, match=rf"names the shard {shards[-1].name}, which is missing"):
        MetaEmbedForSequenceClassification.from_pretrained(target)
    assert no_real_build == []


def _edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_the_build_recorder_sees_a_model_built(saved_v1, no_real_build):
    """The recorder above is what construction calls: a sound folder loads and the recorder saw its backbones."""
    MetaEmbedForSequenceClassification.from_pretrained(saved_v1[0])
    assert no_real_build and set(no_real_build) <= {"meta"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(fusion="dmee"), r"unknown fusion 'dmee' \(config field `fusion`\); choose one of"),
        (lambda c: c.update(pooling="median"), r"unknown pooling 'median'"),
        (
            lambda c: c.update(fusion="attention", fusion_num_heads=3),
            r"fusion_num_heads=3 must divide the fusion size \(fusion_dim\) 16; choose one of: 1, 2, 4, 8, 16",
        ),
        (
            lambda c: c.update(unit_encoder="convbert", convbert_num_heads=6),
            r"convbert_num_heads=6 must be even .* divide the unit size 16; choose one of: 2, 4, 8, 16",
        ),
        (lambda c: c.update(window_size=4, window_overlap=4), r"window_overlap must be a whole number"),
        (lambda c: c.update(backbone_unit_types=["residue"]), r"backbone_unit_types has 1 entries for 2 backbone"),
        (
            lambda c: c["backbones"][0]["config"].update(hidden_size=32),
            r"config.json does not describe these weights",
        ),
        (
            lambda c: c.update(fusion_dim=8),
            r"config.json does not describe these weights \(\d+ tensors differ, e\.g\.",
        ),
    ],
)
def test_impossible_configs_fail_before_any_tensor_is_built(edit, message, saved_v1, tmp_path, no_real_build):
    folder, _, _ = saved_v1
    target = tmp_path / "edited"
    shutil.copytree(folder, target)
    _edit_config(target, edit)
    with pytest.raises(ValueError, match=message):
        MetaEmbedForSequenceClassification.from_pretrained(target)
    assert set(no_real_build) <= {"meta"}


def test_remote_code_files_import_only_torch_transformers_and_each_other(saved_v1):
    folder, _, _ = saved_v1
    allowed = {"torch", "transformers"} | set(sys.stdlib_module_names)
    files = sorted(folder.glob("*.py"))
    names = {path.stem for path in files}
    assert {"modeling_metaembed", "processing_metaembed", "windowing", "safe_files"} <= names
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in allowed, f"{path.name} imports {alias.name}"
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert node.module.split(".")[0] in allowed, f"{path.name} imports from {node.module}"
                else:
                    assert node.level == 1 and node.module in names, (
                        f"{path.name}: from {'.' * node.level}{node.module}"
                    )


# -------------------------------------------------------------------------------------------------- determinism


def _dropout_heavy_model(short_backbones) -> MetaEmbedForSequenceClassification:
    """ConvBERT unit encoder, attention fusion and a BERT backbone, each with dropout configured."""
    backbone = tiny_backbones.build_tiny_bert(max_length=MAX_RESIDUES)[0]
    backbone.config.hidden_dropout_prob = backbone.config.attention_probs_dropout_prob = 0.5
    for module in backbone.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.5
    return MetaEmbedForSequenceClassification.from_backbones(
        [backbone], unit_types=["word"], fusion="attention", unit_encoder="convbert", num_labels=2, fusion_dropout=0.5,
        head_dropout=0.5, convbert_num_heads=2,
    )  # fmt: skip


def test_same_seed_same_model_and_outputs(short_backbones, text_processor):
    batch = MetaEmbedProcessor.from_backbones([short_backbones["bert"]])(SHORT_TEXTS)
    outputs = []
    for _ in range(2):
        set_seed(7)
        model = _dropout_heavy_model(short_backbones).eval()
        with torch.no_grad():
            outputs.append(model(**batch).logits)
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)
    set_seed(8)
    with torch.no_grad():
        assert not torch.equal(_dropout_heavy_model(short_backbones).eval()(**batch).logits, outputs[0])


def test_eval_mode_has_no_dropout_anywhere(short_backbones):
    batch = MetaEmbedProcessor.from_backbones([short_backbones["bert"]])(SHORT_TEXTS)
    model = _dropout_heavy_model(short_backbones)
    model.metaembed.unfreeze_backbones()
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(**batch).logits, model(**batch).logits)  # dropout is live in training
    model.eval()
    assert all(not module.training for module in model.modules())
    assert sum(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()) >= 5
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_frozen_backbones_stay_in_eval_mode_while_training(short_backbones):
    model = _dropout_heavy_model(short_backbones).train()
    backbone_modules = list(model.metaembed.backbone_0.modules())
    assert all(not module.training for module in backbone_modules)
    assert model.classifier.training and model.metaembed.fusion.training
