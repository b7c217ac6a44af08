"""Length-aware batching (`hf_metaembed.batching`): every input once, budgets respected per backbone, longest first,
the same plan on every call, and model outputs equal to one sample at a time, in input order."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.batching import (
    TokenBudgetBatchSampler,
    autocast,
    feature_rows,
    move_to_device,
    padded_tokens,
    plan_batches,
    run_in_input_order,
    sample_token_lengths,
    token_budgets,
)

lengths_strategy = st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300)), min_size=0, max_size=60)


@settings(max_examples=60, deadline=None)
@given(
    lengths=lengths_strategy,
    budgets=st.tuples(st.integers(1, 900), st.integers(1, 900)),
    max_batch_size=st.one_of(st.none(), st.integers(1, 9)),
    segment_counts=st.lists(st.integers(1, 4), min_size=60, max_size=60),
)
def test_plan_covers_every_input_once_within_every_budget(lengths, budgets, max_batch_size, segment_counts):
    segments = segment_counts[: len(lengths)]
    plan = plan_batches(lengths, budgets, max_batch_size, segments)
    assert sorted(position for batch in plan for position in batch) == list(range(len(lengths)))
    for batch in plan:
        assert batch, "no empty batch"
        if max_batch_size is not None:
            assert len(batch) <= max_batch_size
        if len(batch) > 1:  # a sample over the budget runs alone; every other batch keeps each backbone's budget
            assert all(tokens <= budget for tokens, budget in zip(padded_tokens(batch, lengths, segments), budgets))
    assert plan == plan_batches(lengths, budgets, max_batch_size, segments)  # deterministic


def test_longest_first_and_ties_in_input_order():
    lengths = [5, 40, 5, 12, 40, 1]
    plan = plan_batches(lengths, max_tokens=80)
    order = [position for batch in plan for position in batch]
    assert order == [1, 4, 3, 0, 2, 5]
    assert plan == [[1, 4], [3, 0, 2, 5]]  # 2 x 40 = 80; then 4 samples x 12 = 48


def test_batches_are_cut_by_tokens_not_counts():
    """Short inputs share large batches, long ones run in small ones: padded tokens stay near the budget."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(30, 1000, size=400).tolist()
    plan = plan_batches(lengths, max_tokens=4096, max_batch_size=256)
    sizes = {len(batch) for batch in plan}
    assert max(sizes) >= 4096 // 200 and min(sizes) <= 4096 // 1000
    tokens = [padded_tokens(batch, [(n,) for n in lengths])[0] for batch in plan]
    assert max(tokens) <= 4096
    padding = sum(tokens) - sum(lengths)
    assert padding < 0.05 * sum(lengths)  # sorted batches waste little on padding
    fixed_count = sum(32 * max(lengths[i : i + 32]) for i in range(0, 400, 32))  # input order, 32 per batch
    assert sum(tokens) < 0.6 * fixed_count


def test_each_backbone_has_its_own_budget():
    # backbone 1 reads twice as many tokens (say, subwords); a budget per backbone
    lengths = [(10, 20)] * 8
    assert [len(b) for b in plan_batches(lengths, max_tokens=[40, 40])] == [2, 2, 2, 2]
    assert [len(b) for b in plan_batches(lengths, max_tokens=[40, 160])] == [4, 4]
    assert [len(b) for b in plan_batches(lengths, max_tokens=80)] == [4, 4]


def test_bad_budgets_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="positive number of tokens, got 0"):
        token_budgets(0, 1)
    with pytest.raises(ValueError, match="3 budgets for 2 backbones; give one number for all of them"):
        token_budgets([1, 2, 3], 2)
    with pytest.raises(ValueError, match="max_batch_size must be a positive number of samples, got 0"):
        plan_batches([3], 10, max_batch_size=0)
    with pytest.raises(ValueError, match="segments lists 1 samples but lengths lists 2"):
        plan_batches([3, 4], 10, segments=[1])
    with pytest.raises(ValueError, match="unknown autocast precision 'int8'; choose one of: fp32, bf16, fp16"):
        autocast("cpu", "int8")


@pytest.fixture(scope="module")
def protein_model(tiny_esm, tiny_ankh):
    torch.manual_seed(0)
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_ankh], fusion="dme").eval()
    return model, MetaEmbedProcessor.from_backbones([tiny_esm, tiny_ankh])


def _proteins(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), int(rng.integers(3, 60)))) for _ in range(count)]


def test_token_lengths_count_each_backbones_tokens(protein_model):
    _, processor = protein_model
    rows = feature_rows(processor(["MKTAY", "GS"], return_tensors=None))
    counts_and_lengths = [sample_token_lengths(row) for row in rows]
    # ESM-2 adds <cls> and <eos>, the Ankh-style T5 encoder only </s>
    assert counts_and_lengths == [(1, (7, 6)), (1, (4, 3))]
    pairs = feature_rows(
        processor(ligand=[["MKT", "GS"]], receptor=[["AAAA"]], architecture="hp", return_tensors=None)
    )
    count, lengths = sample_token_lengths(pairs[0])
    assert count == 3 and lengths == (6, 5)  # three chains, the longest has 4 residues


def test_outputs_equal_one_sample_at_a_time_in_input_order(protein_model):
    model, processor = protein_model
    sequences = _proteins(23)
    rows = processor(sequences, return_tensors=None)
    batch_sizes = []

    def run(batch):
        batch_sizes.append(len(batch))
        with torch.inference_mode():
            return list(model(**processor.pad(batch)).pooler_output)

    batched = torch.stack(run_in_input_order(rows, run, max_tokens=120, max_batch_size=8))
    assert max(batch_sizes) > 1 and sum(batch_sizes) == 23
    with torch.inference_mode():
        single = torch.stack([model(**processor([sequence])).pooler_output[0] for sequence in sequences])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_dataloader_batch_sampler_gives_every_sample_once(protein_model):
    model, processor = protein_model
    sequences = _proteins(17, seed=1)
    rows = feature_rows(processor(sequences, return_tensors=None))
    sampler = TokenBudgetBatchSampler.from_features(rows, max_tokens=100)
    loader = torch.utils.data.DataLoader(rows, batch_sampler=sampler, collate_fn=processor.pad)
    seen = [position for batch in sampler for position in batch]
    assert sorted(seen) == list(range(17)) and len(loader) == len(sampler) > 1
    with torch.inference_mode():
        pooled = torch.cat([model(**batch).pooler_output for batch in loader])
        reference = model(**processor([sequences[i] for i in seen])).pooler_output
    torch.testing.assert_close(pooled, reference, atol=1e-5, rtol=1e-5)


def test_cpu_moves_and_bf16_autocast(protein_model):
    model, processor = protein_model
    batch = move_to_device({**processor(["MKTAYIAK"]), "note": "kept"}, "cpu")
    assert batch["note"] == "kept" and batch["input_ids"].device.type == "cpu"
    with torch.inference_mode(), autocast("cpu", "bf16"):
        low = model(**{k: v for k, v in batch.items() if k != "note"}).pooler_output
    with torch.inference_mode(), autocast("cpu", "fp32"):
        full = model(**{k: v for k, v in batch.items() if k != "note"}).pooler_output
    assert full.dtype == torch.float32
    torch.testing.assert_close(low.float(), full, atol=0.1, rtol=0.1)  # bf16 keeps about 3 significant digits


# ---------------------------------------------------------------------------------------------- pipelines


@pytest.fixture(scope="module")
def saved_folders(tiny_esm, tiny_ankh, tmp_path_factory):
    folders = {}
    for name, model_class in (("base", MetaEmbedModel), ("classifier", MetaEmbedForSequenceClassification)):
        folder = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        model_class.from_backbones([tiny_esm, tiny_ankh], fusion="dme", num_labels=3).save_pretrained(folder)
        MetaEmbedProcessor.from_backbones([tiny_esm, tiny_ankh]).save_pretrained(folder)
        folders[name] = str(folder)
    return folders


def test_pipeline_reads_a_list_longest_first_within_the_budget(saved_folders, monkeypatch):
    from transformers import pipeline

    import hf_metaembed.integrations.pipelines  # noqa: F401  (registers the task)

    extractor = pipeline("metaembed-feature-extraction", model=saved_folders["base"])
    sequences = _proteins(19, seed=2)
    padded = []
    original = extractor.processor.pad

    def recording(features, **kwargs):
        batch = original(features, **kwargs)
        padded.append(tuple(batch["input_ids"].shape))
        return batch

    monkeypatch.setattr(extractor.processor, "pad", recording)
    batched = extractor(sequences, batch_size=8, max_tokens=150, pooled=True, return_fusion_weights=True)
    assert sum(shape[0] for shape in padded) == 19 and max(shape[0] for shape in padded) > 1
    assert all(shape[0] * shape[2] <= 150 or shape[0] == 1 for shape in padded)  # the budget, per batch
    assert [shape[2] for shape in padded] == sorted((shape[2] for shape in padded), reverse=True)  # longest first
    padded.clear()
    alone = [extractor(sequence, pooled=True) for sequence in sequences]
    for got, expected, sequence in zip(batched, alone, sequences):
        assert got["units"] == list(sequence)  # in input order
        np.testing.assert_allclose(got["features"], expected, atol=1e-5)
    low = extractor(sequences[:3], batch_size=2, autocast="bf16", return_tensors=True, pooled=True)
    assert low[0].dtype == torch.float32
    torch.testing.assert_close(low[0], torch.tensor(alone[0]), atol=0.1, rtol=0.1)


def test_classification_pipeline_batches_by_tokens_in_input_order(saved_folders):
    from transformers import pipeline

    classifier = pipeline("text-classification", model=saved_folders["classifier"], trust_remote_code=True)
    sequences = _proteins(11, seed=3)
    batched = classifier(sequences, batch_size=4, max_tokens=120, top_k=None)
    alone = [classifier(sequence, top_k=None) for sequence in sequences]
    for got, expected in zip(batched, alone):
        assert [item["label"] for item in got] == [item["label"] for item in expected]
        np.testing.assert_allclose([i["score"] for i in got], [i["score"] for i in expected], atol=1e-5)


# ---------------------------------------------------------------------------------------------- evaluation


def test_trainer_evaluates_and_predicts_in_token_budget_batches_in_dataset_order(saved_folders, tmp_path):
    from transformers import Trainer, TrainingArguments

    from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset, MetaEmbedTrainer

    model = MetaEmbedForSequenceClassification.from_pretrained(saved_folders["classifier"]).eval()
    processor = MetaEmbedProcessor.from_pretrained(saved_folders["classifier"])
    sequences = _proteins(21, seed=4)
    dataset = MetaEmbedDataset(processor, sequences, labels=[i % 3 for i in range(21)])
    collator = MetaEmbedDataCollator(processor)
    padded = []

    def recording(features):
        batch = collator(features)
        padded.append(tuple(batch["input_ids"].shape))
        return batch

    args = TrainingArguments(tmp_path, per_device_eval_batch_size=8, report_to="none", use_cpu=True)
    budgeted = MetaEmbedTrainer(model=model, args=args, data_collator=recording, eval_max_tokens=150)
    plain = Trainer(model=model, args=args, data_collator=collator)
    got, expected = budgeted.predict(dataset), plain.predict(dataset)
    assert sum(shape[0] for shape in padded) == 21 and len(padded) > 3
    assert all(shape[0] * shape[2] <= 150 or shape[0] == 1 for shape in padded)
    np.testing.assert_allclose(got.predictions, expected.predictions, atol=1e-5)  # in dataset order
    np.testing.assert_array_equal(got.label_ids, expected.label_ids)
    assert got.metrics["test_loss"] == pytest.approx(expected.metrics["test_loss"], abs=1e-5)
    padded.clear()
    budgeted.eval_dataset = dataset
    assert budgeted.evaluate()["eval_loss"] == pytest.approx(expected.metrics["test_loss"], abs=1e-5)
    assert sum(shape[0] for shape in padded) == 21


# ---------------------------------------------------------------------------------------------- GPU readiness


def test_backbones_run_with_sdpa_attention_where_transformers_supports_it(tiny_backbones_root, tmp_path):
    """Built by `from_backbones` and rebuilt from a saved config, each backbone uses PyTorch's scaled-dot-product
    attention (fused, memory-efficient kernels on GPUs and CPUs) when its class supports it."""
    for family, folder in tiny_backbones_root.items():
        model = MetaEmbedModel.from_backbones([folder])
        model.save_pretrained(tmp_path / family)
        reloaded = MetaEmbedModel.from_pretrained(tmp_path / family)
        for backbone in (model.backbone_0, reloaded.backbone_0):
            expected = "sdpa" if getattr(type(backbone), "_supports_sdpa", False) else "eager"
            assert backbone.config._attn_implementation == expected, family
    assert {"esm", "bert", "roberta", "prott5", "ankh"} <= set(tiny_backbones_root)
