"""`forward` takes explicit keywords only, as a plain PyTorch module: a typo is a `TypeError` naming it, while the
keywords that PEFT's task wrappers, `Trainer` and pipelines really pass keep working."""

import copy
import inspect

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor

PROTEINS = ["MKTAYIAKQR", "GSHW"]


@pytest.fixture(scope="module")
def built(tiny_esm):
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_esm], num_labels=2).eval()
    return model, MetaEmbedProcessor.from_backbones([tiny_esm])


@pytest.mark.parametrize("which", ["head", "base"])
def test_an_unknown_keyword_is_a_type_error_naming_it(built, which):
    model, processor = built
    target = model if which == "head" else model.metaembed
    with pytest.raises(TypeError, match="attention_mask_typo"):
        target(**processor(PROTEINS), attention_mask_typo=1)


def test_return_dict_false_gives_a_tuple_as_transformers_models_do(built):
    model, processor = built
    batch = processor(PROTEINS)
    with torch.no_grad():
        as_tuple = model(**batch, labels=torch.tensor([0, 1]), return_dict=False)
        as_output = model(**batch, labels=torch.tensor([0, 1]))
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_output.loss)
    torch.testing.assert_close(as_tuple[1], as_output.logits)


def test_what_transformers_cannot_honour_is_refused_with_the_fix(built):
    model, processor = built
    batch = processor(PROTEINS)
    with pytest.raises(ValueError, match="not inputs_embeds"):
        model.metaembed(**batch, inputs_embeds=torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="output_backbone_states=True"):
        model(**batch, output_attentions=True)


def test_peft_sequence_classification_wrapper_passes_its_keywords(built):
    """PeftModelForSequenceClassification.forward passes inputs_embeds, output_attentions, output_hidden_states and
    return_dict (as None) besides the batch: the strict forward accepts exactly those."""
    model, processor = built
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=2, target_modules=["query", "value"], modules_to_save=["metaembed.fusion"]
    )
    peft_model = get_peft_model(copy.deepcopy(model), config)
    out = peft_model(**processor(PROTEINS), labels=torch.tensor([0, 1]))
    assert out.logits.shape == (2, 2) and torch.isfinite(out.loss)


def test_the_base_model_forward_lists_its_parameters(built):
    parameters = inspect.signature(MetaEmbedModel.forward).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
