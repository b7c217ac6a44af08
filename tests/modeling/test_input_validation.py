"""What `forward` does with hand-made inputs (issue 14, item 5): precomputed `backbone_states` and `labels` are
converted where their meaning is unambiguous and otherwise fail with errors that name the backbone or sample and what
was expected; the problem type is fixed at construction or by the first valid batch of labels.

The models are built from configs (random tiny ESM-2 and ProtT5 backbones of width 16) and fed backbone states, so
no backbone runs; hypothesis properties at the end cover the same paths on generated inputs.
"""

import json

import numpy as np
import pytest
import tiny_backbones
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_metaembed import (
    MetaEmbedConfig,
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedModel,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WIDTH = 16  # hidden size of both tiny backbones
NAMES = ["esm-tiny", "prott5-tiny"]


def _config(**settings) -> MetaEmbedConfig:
    configs = [
        tiny_backbones.build_tiny_esm()[0].config.to_dict(),
        tiny_backbones.build_tiny_prott5()[0].config.to_dict(),
    ]
    return MetaEmbedConfig(
        backbone_configs=configs, backbone_names=NAMES, backbone_unit_types=["residue"] * 2, **settings
    )


def _fresh(model):
    """The model with no problem type fixed yet (as built without one)."""
    model.config.problem_type = None
    model.problem_type = None
    return model


@pytest.fixture(scope="module")
def base() -> MetaEmbedModel:
    return MetaEmbedModel(_config(fusion="dme")).eval()


@pytest.fixture(scope="module")
def classifier() -> MetaEmbedForSequenceClassification:
    torch.manual_seed(0)
    return MetaEmbedForSequenceClassification(_config(fusion="dme", num_labels=3, head_dropout=0.0)).eval()


@pytest.fixture(scope="module")
def regressor() -> MetaEmbedForSequenceClassification:
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification(_config(fusion="mean", num_labels=1, head_dropout=0.0)).eval()
    return model


def _inputs(lengths: list[int], seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Random float32 backbone states for segments of the given unit counts, and their unit mask."""
    generator = torch.Generator().manual_seed(seed)
    units = max(lengths)
    unit_mask = (torch.arange(units) < torch.tensor(lengths).unsqueeze(1)).long()
    states = [torch.randn(len(lengths), units, WIDTH, generator=generator) for _ in range(2)]
    return states, unit_mask


# --------------------------------------------------------------------------------------------- backbone states


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (
            lambda s: [s[0], torch.randn(2, 5, 24)],
            ValueError,
            r"backbone_states\[1\] \(backbone 1, prott5-tiny\) holds 24-dim states but backbone 1 gives 16-dim "
            r"states \(its hidden size\); expected \(segments, units, d_i\) = \(2, 5, 16\), got \(2, 5, 24\)",
        ),
        (
            lambda s: [s[0][:, :3], s[1]],
            ValueError,
            r"backbone_states\[0\] \(backbone 0, esm-tiny\) holds 3 units per segment but unit_mask has 5",
        ),
        (lambda s: [s[0], s[1][:1]], ValueError, r"backbone_states\[1\] .* holds 1 segments but unit_mask has 2"),
        (lambda s: [s[0]], ValueError, r"holds 1 tensors; this model has 2 backbones \(0 \(esm-tiny\), 1 \(prott5"),
        (lambda s: s[0], TypeError, r"must be a list with one .* per backbone \(2\); got a Tensor of shape"),
        (lambda s: [s[0], s[1][0]], ValueError, r"backbone_states\[1\] .* has shape \(5, 16\); expected \(segments,"),
        (lambda s: [s[0], s[1].long()], TypeError, r"backbone_states\[1\] .* holds int64 values; backbone states are"),
        (lambda s: [s[0], [[1.0, 2.0], [3.0]]], TypeError, r"backbone_states\[1\] .* cannot be read as numbers"),
    ],
)
def test_hand_made_backbone_states_fail_naming_the_backbone(base, edit, error, message):
    states, unit_mask = _inputs([5, 3])
    with pytest.raises(error, match=message):
        base(backbone_states=edit(states), unit_mask=unit_mask)


@pytest.mark.parametrize(
    ("unit_mask", "message"),
    [
        (torch.tensor([1, 1, 0]), r"unit_mask must be \(segments, units\)"),
        (torch.tensor([[1, 2, 0], [1, 0, 0]]), r"unit_mask of segments \[0\] holds values other than 0 and 1"),
    ],
)
def test_bad_unit_mask_is_a_clear_error(base, unit_mask, message):
    states, _ = _inputs([3, 1])
    with pytest.raises(ValueError, match=message):
        base(backbone_states=states, unit_mask=unit_mask)


def test_numpy_lists_and_float64_states_are_converted_to_the_models_dtype(base):
    states, unit_mask = _inputs([5, 2, 4])
    with torch.no_grad():
        reference = base(backbone_states=states, unit_mask=unit_mask).last_hidden_state
        variants = {
            "numpy float64": ([s.double().numpy() for s in states], unit_mask.numpy()),
            "nested lists": ([s.tolist() for s in states], unit_mask.tolist()),
            "torch float64": ([s.double() for s in states], unit_mask.bool()),
        }
        for what, (given_states, given_mask) in variants.items():
            out = base(backbone_states=given_states, unit_mask=given_mask, output_backbone_states=True)
            assert out.last_hidden_state.dtype == torch.float32, what
            assert all(s.dtype == torch.float32 for s in out.backbone_states), what
            torch.testing.assert_close(out.last_hidden_state, reference, atol=0, rtol=0, msg=what)


def test_a_float64_model_keeps_float64_states():
    model = MetaEmbedModel(_config(fusion="dme")).double().eval()
    states, unit_mask = _inputs([4, 2])
    with torch.no_grad():
        out = model(backbone_states=[s.double() for s in states], unit_mask=unit_mask)
    assert out.last_hidden_state.dtype == torch.float64


def test_mix_layer_backbone_states_need_their_layers_axis():
    model = MetaEmbedModel(_config(fusion="dme", backbone_layers=["mix", "last"])).eval()
    states, unit_mask = _inputs([4, 2])
    layers = model.layer_mixes["0"].layer_scores.shape[0]
    assert layers == 3  # embeddings plus two layers
    mixed = [torch.randn(2, 4, layers, WIDTH), states[1]]
    with torch.no_grad():
        assert model(backbone_states=mixed, unit_mask=unit_mask).last_hidden_state.shape == (2, 4, WIDTH)
    with pytest.raises(ValueError, match=r"backbone_states\[0\] .* has shape \(2, 4, 16\); expected \(segments, "):
        model(backbone_states=states, unit_mask=unit_mask)
    with pytest.raises(ValueError, match=r"holds 2 layers but backbone 0 \(layer='mix'\) gives 3 hidden states"):
        model(backbone_states=[mixed[0][:, :, :2], states[1]], unit_mask=unit_mask)


def test_sequence_level_takes_one_vector_per_segment():
    model = MetaEmbedModel(_config(fusion="dme", level="sequence")).eval()
    _, unit_mask = _inputs([4, 2])
    vectors = [torch.randn(2, WIDTH), torch.randn(2, WIDTH)]
    with torch.no_grad():
        flat = model(backbone_states=vectors, unit_mask=unit_mask).pooler_output
        one_unit = model(backbone_states=[v.unsqueeze(1) for v in vectors], unit_mask=unit_mask).pooler_output
    torch.testing.assert_close(flat, one_unit, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"holds 4 units per segment but unit_mask has 1"):
        model(backbone_states=[torch.randn(2, 4, WIDTH)] * 2, unit_mask=unit_mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to put states on another device")
def test_states_on_another_device_are_moved_to_the_fusions_device(base):
    states, unit_mask = _inputs([4, 2])
    with torch.no_grad():
        reference = base(backbone_states=states, unit_mask=unit_mask).last_hidden_state
        out = base(backbone_states=[s.cuda() for s in states], unit_mask=unit_mask.cuda()).last_hidden_state
        assert out.device.type == "cpu"
        torch.testing.assert_close(out, reference)
        on_gpu = MetaEmbedModel(_config(fusion="dme")).eval()
        on_gpu.load_state_dict(base.state_dict())
        on_gpu.cuda()
        out = on_gpu(backbone_states=states, unit_mask=unit_mask).last_hidden_state
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), reference, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------ labels


def _loss(model, labels, lengths=(5, 2, 4), seed=0):
    states, unit_mask = _inputs(list(lengths), seed)
    with torch.no_grad():
        return model(backbone_states=states, unit_mask=unit_mask, labels=labels).loss


def test_class_labels_in_any_container_and_integer_dtype_give_the_same_loss(classifier):
    reference = _loss(_fresh(classifier), torch.tensor([0, 2, 1]))
    variants = {
        "list": [0, 2, 1],
        "tuple": (0, 2, 1),
        "numpy int64": np.array([0, 2, 1]),
        "numpy int32": np.array([0, 2, 1], dtype=np.int32),
        "int32": torch.tensor([0, 2, 1], dtype=torch.int32),
        "int16": torch.tensor([0, 2, 1], dtype=torch.int16),
        "uint8": torch.tensor([0, 2, 1], dtype=torch.uint8),
        "whole floats": torch.tensor([0.0, 2.0, 1.0]),
        "column": torch.tensor([[0], [2], [1]]),
    }
    for what, labels in variants.items():
        torch.testing.assert_close(_loss(_fresh(classifier), labels), reference, atol=0, rtol=0, msg=what)
        assert classifier.problem_type == "single_label_classification", what


def test_regression_labels_in_any_container_give_the_same_loss(regressor):
    reference = _loss(regressor, torch.tensor([0.5, -1.25, 3.0]))
    for what, labels in {
        "list": [0.5, -1.25, 3.0],
        "numpy float64": np.array([0.5, -1.25, 3.0]),
        "column": [[0.5], [-1.25], [3.0]],
        "ints": torch.tensor([1, -2, 3]),
    }.items():
        expected = reference if what != "ints" else _loss(regressor, torch.tensor([1.0, -2.0, 3.0]))
        torch.testing.assert_close(_loss(regressor, labels), expected, atol=0, rtol=0, msg=what)
    assert regressor.problem_type == "regression"


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (["a", "b", "c"], TypeError, r"labels cannot be read as numbers"),
        ("0 1 2", TypeError, r"labels must be numbers .*; got str"),
        ([0.5, 1.0, 2.0], ValueError, r"labels of samples \[0\] are not whole numbers, so they are not class ids"),
        ([0, 3, 1], ValueError, r"labels of samples \[1\] hold class ids \[3\] outside 0..2"),
        ([0, 1], ValueError, r"labels hold 2 entries but the batch has 3 samples"),
        ([[0, 1, 1], [0, 1, 0], [0, 1, 5]], ValueError, r"multi-label targets of samples \[2\] lie outside \[0, 1\]"),
    ],
)
def test_bad_labels_name_the_sample(classifier, labels, error, message):
    with pytest.raises(error, match=message):
        _loss(_fresh(classifier), labels)
    assert classifier.problem_type is None  # an invalid batch fixes nothing


def test_regression_labels_of_the_wrong_shape(regressor):
    with pytest.raises(
        ValueError, match=r"regression labels must be \(samples,\) or \(samples, num_labels\) = \(3, 1\)"
    ):
        _loss(regressor, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])


def test_the_settled_problem_type_lives_on_the_model_and_is_saved_not_written_on_the_config(classifier, tmp_path):
    model = _fresh(classifier)
    before = model.config.to_dict()
    _loss(model, [0, 2, 1])
    assert model.problem_type == "single_label_classification"
    assert model.config.to_dict() == before  # forward writes nothing onto the config
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["problem_type"] == "single_label_classification"
    assert model.config.problem_type is None


def test_first_valid_batch_fixes_the_problem_type_and_a_contradicting_batch_is_an_error(classifier):
    model = _fresh(classifier)
    with pytest.raises(ValueError):  # invalid first batch: nothing fixed
        _loss(model, [0, 1])
    assert model.problem_type is None
    # float class ids on a 3-class model are one class id per sample (transformers would switch to multi-label)
    _loss(model, torch.tensor([0.0, 1.0, 2.0]))
    assert model.problem_type == "single_label_classification"
    with pytest.raises(ValueError, match=r"labels of shape \(3, 3\) are multi-label rows .* problem_type is "):
        _loss(model, torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    assert model.problem_type == "single_label_classification"

    model = _fresh(classifier)
    _loss(model, torch.tensor([[0, 1, 1], [1, 0, 0], [0, 0, 1]]))  # multi-hot rows, even as integers
    assert model.problem_type == "multi_label_classification"
    with pytest.raises(ValueError, match=r"one row of 3 targets .* One class id per sample is single-label, but"):
        _loss(model, torch.tensor([0, 2, 1]))
    assert model.problem_type == "multi_label_classification"


def test_problem_type_set_at_construction_is_kept():
    model = MetaEmbedForSequenceClassification(
        _config(num_labels=2, problem_type="multi_label_classification", head_dropout=0.0)
    ).eval()
    with pytest.raises(ValueError, match=r"multi-label classification takes one row of 2 targets"):
        _loss(model, [0, 1, 1])
    assert model.problem_type == "multi_label_classification"
    assert torch.isfinite(_loss(model, [[0, 1], [1, 1], [0, 0]]))


def test_token_labels_in_any_container_and_dtype():
    torch.manual_seed(0)
    model = MetaEmbedForTokenClassification(_config(num_labels=2, head_dropout=0.0)).eval()
    states, unit_mask = _inputs([3, 2])
    labels = torch.tensor([[0, 1, 1], [1, 0, -100]])
    with torch.no_grad():
        reference = model(backbone_states=states, unit_mask=unit_mask, labels=labels).loss
        for what, given in {
            "list": labels.tolist(),
            "numpy int32": labels.numpy().astype(np.int32),
            "whole floats": labels.float(),
            "int32": labels.int(),
        }.items():
            loss = model(backbone_states=states, unit_mask=unit_mask, labels=given).loss
            torch.testing.assert_close(loss, reference, atol=0, rtol=0, msg=what)
        with pytest.raises(ValueError, match=r"labels of segments \[1\] are not whole numbers"):
            model(backbone_states=states, unit_mask=unit_mask, labels=[[0, 1, 1], [0.5, 0, -100]])
        with pytest.raises(ValueError, match=r"token labels must have shape \(segments, units\) = \(2, 3\)"):
            model(backbone_states=states, unit_mask=unit_mask, labels=[0, 1])


# ----------------------------------------------------------------------------------------- properties (hypothesis)

batches = st.lists(st.integers(1, 8), min_size=1, max_size=4)


@FAST
@given(
    lengths=batches,
    backbone=st.integers(0, 1),
    axis=st.integers(0, 2),
    delta=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_any_wrong_state_shape_is_an_error_naming_the_backbone(base, lengths, backbone, axis, delta, seed):
    """A state tensor with one axis too long is a ValueError naming that backbone and the expected shape, never a
    torch error from inside fusion."""
    states, unit_mask = _inputs(lengths, seed)
    shape = list(states[backbone].shape)
    shape[axis] += delta
    states[backbone] = torch.randn(shape)
    expected = (len(lengths), max(lengths), WIDTH)
    with pytest.raises(ValueError) as error:
        base(backbone_states=states, unit_mask=unit_mask)
    message = str(error.value)
    assert message.startswith(f"backbone_states[{backbone}] (backbone {backbone}, {NAMES[backbone]})")
    assert f"expected (segments, units, d_i) = {expected}, got {tuple(shape)}" in message


@FAST
@given(
    lengths=batches,
    seed=st.integers(0, 2**16),
    form=st.sampled_from(["numpy float64", "numpy float32", "lists", "torch float64"]),
)
def test_converted_states_give_the_tensors_outputs(base, lengths, seed, form):
    """float32 values given as numpy arrays, nested lists or float64 give the float32 tensors' outputs exactly."""
    states, unit_mask = _inputs(lengths, seed)
    convert = {
        "numpy float64": lambda t: t.double().numpy(),
        "numpy float32": lambda t: t.numpy(),
        "lists": lambda t: t.tolist(),
        "torch float64": lambda t: t.double(),
    }[form]
    with torch.no_grad():
        reference = base(backbone_states=states, unit_mask=unit_mask)
        out = base(backbone_states=[convert(s) for s in states], unit_mask=convert(unit_mask))
    torch.testing.assert_close(out.last_hidden_state, reference.last_hidden_state, atol=0, rtol=0)
    torch.testing.assert_close(out.fusion_weights, reference.fusion_weights, atol=0, rtol=0)


integer_dtypes = st.sampled_from([torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])


@FAST
@given(
    classes=st.lists(st.integers(0, 2), min_size=3, max_size=3),
    dtype=integer_dtypes,
    form=st.sampled_from(["tensor", "numpy", "list", "whole floats"]),
)
def test_class_ids_of_any_integer_form_give_the_int64_loss(classifier, classes, dtype, form):
    reference = _loss(_fresh(classifier), torch.tensor(classes))
    tensor = torch.tensor(classes, dtype=dtype)
    labels = {"tensor": tensor, "numpy": tensor.numpy(), "list": classes, "whole floats": tensor.double()}[form]
    torch.testing.assert_close(_loss(_fresh(classifier), labels), reference, atol=0, rtol=0)
    assert classifier.problem_type == "single_label_classification"


label_batches = st.one_of(
    st.lists(st.integers(0, 2), min_size=3, max_size=3).map(lambda ids: ("single", ids)),
    st.lists(st.lists(st.integers(0, 1), min_size=3, max_size=3), min_size=3, max_size=3).map(
        lambda rows: ("multi", rows)
    ),
    st.lists(st.integers(0, 2), min_size=2, max_size=4).map(lambda ids: ("invalid", ids + [7])),
)


@FAST
@given(sequence=st.lists(label_batches, min_size=1, max_size=5))
def test_problem_type_never_switches_after_the_first_valid_batch(classifier, sequence):
    """Whatever order single-label, multi-label and invalid batches come in, the first valid one fixes the problem
    type; every later batch of the other kind is an error and leaves it unchanged."""
    model = _fresh(classifier)
    fixed = None
    names = {"single": "single_label_classification", "multi": "multi_label_classification"}
    for kind, labels in sequence:
        valid = kind != "invalid" and (fixed is None or names[kind] == fixed)
        if valid:
            assert torch.isfinite(_loss(model, labels))
            fixed = fixed or names[kind]
        else:
            with pytest.raises(ValueError):
                _loss(model, labels)
        assert model.problem_type == fixed
