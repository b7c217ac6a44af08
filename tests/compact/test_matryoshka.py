"""Matryoshka loss over nested prefixes of the pooled embedding, and truncation (issue 19, section 5)."""

import pytest
import torch

from hf_metaembed import MetaEmbedForSequenceClassification
from hf_metaembed.compact import MatryoshkaLoss, matryoshka_dims, nested_prefix, truncate_embeddings


@pytest.fixture(scope="module")
def classifier(tiny_bert, tiny_roberta):
    torch.manual_seed(0)
    return MetaEmbedForSequenceClassification.from_backbones(
        [tiny_bert, tiny_roberta], fusion="concat", num_labels=3, head_dropout=0.0
    ).eval()


def states(count: int = 6, units: int = 4, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "backbone_states": [torch.randn(count, units, 16, generator=generator) for _ in range(2)],
        "unit_mask": torch.ones(count, units, dtype=torch.long),
    }


def test_truncation_keeps_a_prefix_and_renormalises():
    embeddings = torch.tensor([[3.0, 4.0, 12.0]])
    torch.testing.assert_close(truncate_embeddings(embeddings, 2), torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(truncate_embeddings(embeddings, 2, normalize=True), torch.tensor([[0.6, 0.8]]))
    torch.testing.assert_close(truncate_embeddings(embeddings, None), embeddings)
    with pytest.raises(ValueError, match="truncate_dim must be an integer from 1 to the embedding width 3, got 4"):
        truncate_embeddings(embeddings, 4)


def test_default_dims_halve_and_bad_dims_are_refused():
    assert matryoshka_dims(64) == [64, 32, 16, 8]
    assert matryoshka_dims(64, [8, 64, 32]) == [64, 32, 8]
    with pytest.raises(ValueError, match="between 1 and the embedding width 64"):
        matryoshka_dims(64, [128, 32])


def test_a_masked_prefix_through_a_linear_head_is_the_head_on_the_prefix(classifier):
    pooled = torch.randn(5, 32)
    linear = classifier.classifier.out_proj  # the linear head: dropout, then this layer
    with torch.no_grad():
        full = classifier.classifier(nested_prefix(pooled, 8))
        prefix = pooled[:, :8] @ linear.weight[:, :8].T + linear.bias
    torch.testing.assert_close(full, prefix)


def test_matryoshka_loss_sums_the_task_loss_over_the_prefixes(classifier):
    inputs, labels = states(), torch.tensor([0, 1, 2, 0, 1, 2])
    loss_fn = MatryoshkaLoss(classifier, dims=[32, 16, 4], weights=[1.0, 0.5, 2.0])
    with torch.no_grad():
        total = loss_fn(inputs, labels)
        pooled = classifier(**inputs).pooler_output
        expected = sum(
            weight * torch.nn.functional.cross_entropy(classifier.classifier(nested_prefix(pooled, dim)), labels)
            for dim, weight in ((32, 1.0), (16, 0.5), (4, 2.0))
        )
        plain = classifier(**inputs, labels=labels).loss
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(MatryoshkaLoss(classifier, dims=[32])(inputs, labels), plain)


def test_matryoshka_loss_trains_the_fusion_and_head(tiny_bert, tiny_roberta):
    model = MetaEmbedForSequenceClassification.from_backbones(
        [tiny_bert, tiny_roberta], fusion="dme", fusion_dim=8, num_labels=1, problem_type="regression"
    )
    loss = MatryoshkaLoss(model, dims=[8, 4, 2])(states(), torch.arange(6.0))
    loss.backward()
    assert all(p.grad is not None for p in model.classifier.parameters())
    assert all(p.grad is not None for p in model.metaembed.fusion.parameters())


def test_matryoshka_errors():
    with pytest.raises(ValueError, match="one weight per matryoshka dim"):
        MatryoshkaLoss(torch.nn.Linear(2, 2), dims=[4, 2], weights=[1.0])
    with pytest.raises(ValueError, match="has no head: pass loss_fn"):
        MatryoshkaLoss(torch.nn.Identity())
