"""What a user of `datasets` and `transformers` types without reading our docs: `Dataset.map` with the processor at any
`batch_size`, `MetaEmbedDataCollator` or `DataCollatorWithPadding(processor)`, and a `Trainer` fed the result."""

import random

import pytest
import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedForTokenClassification, MetaEmbedProcessor
from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset

datasets = pytest.importorskip("datasets")

RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def _proteins(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(RESIDUES) for _ in range(rng.randint(3, 17))) for _ in range(count)]


@pytest.fixture(scope="module")
def backbones(tiny_esm, tiny_prott5):
    return [tiny_esm, tiny_prott5]


@pytest.fixture(scope="module")
def processor(backbones):
    return MetaEmbedProcessor.from_backbones(backbones)


@pytest.fixture(scope="module")
def table():
    sequences = _proteins(10, seed=0)
    return datasets.Dataset.from_dict({"sequence": sequences, "label": [float(len(s) % 5) for s in sequences]})


def _args(tmp_path, **kwargs) -> TrainingArguments:
    settings = {"per_device_train_batch_size": 4, "report_to": "none", "use_cpu": True, "disable_tqdm": True}
    return TrainingArguments(output_dir=str(tmp_path), **{**settings, **kwargs})


def _regressor(backbones):
    torch.manual_seed(0)
    return MetaEmbedForSequenceClassification.from_backbones(backbones, num_labels=1, problem_type="regression")


def _assert_same_batch(batch, expected):
    assert set(batch) == set(expected)
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key


@pytest.mark.parametrize("batch_size", [1, 4, 10])
def test_map_with_the_default_call_and_any_batch_size_collates_to_the_processors_batch(processor, table, batch_size):
    mapped = table.map(lambda batch: processor(batch["sequence"]), batched=True, batch_size=batch_size)
    rows = [mapped[index] for index in range(len(mapped))]
    expected = processor(table["sequence"], labels=table["label"])
    _assert_same_batch(MetaEmbedDataCollator(processor)(rows), expected)
    _assert_same_batch(DataCollatorWithPadding(processor)(rows), expected)


def test_unpadded_rows_do_not_depend_on_the_map_batch(processor, table):
    def encode(batch):
        return processor(batch["sequence"], return_tensors=None)

    by_four = table.map(encode, batched=True, batch_size=4)
    alone = table.map(encode, batched=True, batch_size=1)
    columns = ["sequence", "label", "input_ids", "token_unit_index", "unit_mask", "segment_side_index"]
    assert by_four.column_names == columns
    assert by_four.to_list() == alone.to_list()
    # the rows are unpadded: each sample's own lengths
    for row, sequence in zip(by_four, table["sequence"]):
        assert len(row["unit_mask"][0]) == len(sequence)
        assert len(row["input_ids"][0][0]) == len(sequence) + 2  # ESM-2's <cls> ... <eos>


@pytest.mark.parametrize("collator", ["metaembed", "with_padding"])
def test_trainer_trains_on_a_mapped_dataset(backbones, processor, table, tmp_path, collator):
    mapped = table.map(lambda batch: processor(batch["sequence"]), batched=True, batch_size=4)
    data_collator = MetaEmbedDataCollator(processor) if collator == "metaembed" else DataCollatorWithPadding(processor)
    model = _regressor(backbones)
    trainer = Trainer(
        model=model, args=_args(tmp_path, max_steps=2), train_dataset=mapped, data_collator=data_collator
    )
    before = model.metaembed.fusion.state_dict()
    before = {key: value.clone() for key, value in before.items()}
    assert trainer.train().global_step == 2
    after = model.metaembed.fusion.state_dict()
    assert any(not torch.equal(before[key], after[key]) for key in before)


def test_pair_architecture_through_datasets(tiny_esm):
    processor = MetaEmbedProcessor.from_backbones([tiny_esm], architecture="hp")
    ligand = [["MKTAYIAK", "GSH"], ["MVLSPADKT"], ["ACDE", "FGHIK", "LMN"]]
    receptor = [["WWWPPP"], ["MKT", "AAY"], ["QRS"]]
    table = datasets.Dataset.from_dict({"ligand": ligand, "receptor": receptor, "label": [1.0, 2.0, 3.0]})
    mapped = table.map(
        lambda batch: processor(ligand=batch["ligand"], receptor=batch["receptor"], return_tensors=None),
        batched=True,
        batch_size=2,
    )
    batch = MetaEmbedDataCollator(processor)([mapped[index] for index in range(3)])
    _assert_same_batch(batch, processor(ligand=ligand, receptor=receptor, labels=[1.0, 2.0, 3.0]))


def test_tokenizer_keywords_keep_their_usual_meaning(processor):
    texts = ["MKTAYIAKQR", "GSH"]
    batch = processor(text=texts, padding=True, truncation=True, max_length=8, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 2, 8)
    assert batch["attention_mask"][1].sum(dim=-1).tolist() == [5, 4]  # GSH: <cls> G S H <eos>; ProtT5: G S H </s>
    with pytest.warns(UserWarning, match="truncation cut"):
        processor(texts, truncation="longest_first", max_length=8)
    fixed = processor(texts, padding="max_length", max_length=24, pad_to_multiple_of=16)
    assert fixed["input_ids"].shape == (2, 2, 32) and fixed["unit_mask"].shape == (2, 32)
    assert type(processor(texts, return_tensors="np")["input_ids"]).__module__ == "numpy"
    padded_lists = processor(texts, padding=True, return_tensors=None)
    assert padded_lists["input_ids"] == processor(texts)["input_ids"].tolist()
    with pytest.raises(ValueError, match="reads max_length=8 tokens.*truncation=True"):
        processor(texts, max_length=8)
    with pytest.raises(ValueError, match="padding=False cannot make one tensor"):
        processor(texts, padding=False, return_tensors="pt")
    assert processor(["MKT", "GSH"], padding=False)["input_ids"].shape == (2, 2, 5)  # equal lengths need no padding
    with pytest.raises(ValueError, match="unknown padding 'longer'; choose one of: True, longest, max_length"):
        processor(texts, padding="longer")
    with pytest.raises(ValueError, match="unknown truncation 'cut'"):
        processor(texts, truncation="cut")
    with pytest.raises(ValueError, match="as the first argument or as text=, not both"):
        processor(texts, text=texts)


# ------------------------------------------------------------------------------------- token classification


@pytest.fixture(scope="module")
def saved_processor_folder(backbones, processor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved_processor")
    processor.save_pretrained(folder)
    return folder


def test_token_classification_with_samples_of_different_lengths(backbones, saved_processor_folder, tmp_path):
    processor = MetaEmbedProcessor.from_pretrained(saved_processor_folder)
    assert processor.per_unit_labels is False  # as every processor saved with the defaults
    sequences = _proteins(8, seed=4)
    labels = [[int(residue in "AILMFVW") for residue in sequence] for sequence in sequences]
    dataset = MetaEmbedDataset(processor, sequences, labels=labels)
    batch = MetaEmbedDataCollator(processor)([dataset[index] for index in range(4)])
    longest = max(len(sequence) for sequence in sequences[:4])
    assert batch["labels"].shape == (4, longest)
    assert batch["labels"][0, : len(sequences[0])].tolist() == labels[0]
    assert (batch["labels"][0, len(sequences[0]) :] == -100).all()

    torch.manual_seed(0)
    model = MetaEmbedForTokenClassification.from_backbones(backbones, num_labels=2)
    args = _args(tmp_path, max_steps=2, per_device_eval_batch_size=4)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=MetaEmbedDataCollator(processor))
    assert trainer.train().global_step == 2
    assert trainer.predict(dataset).predictions.shape == (8, max(len(s) for s in sequences), 2)


def test_a_label_list_one_short_is_an_error_naming_the_sample(saved_processor_folder):
    processor = MetaEmbedProcessor.from_pretrained(saved_processor_folder)
    sequences = ["MKTAYIAK", "GSHMV", "ACDEFGHIKL", "MVLS"]
    labels = [[0] * len(sequence) for sequence in sequences]
    labels[2] = labels[2][:-1]
    with pytest.raises(ValueError, match=r"sample 2 has 9 labels for 10 units"):
        MetaEmbedDataset(processor, sequences, labels=labels)
    rows = processor(sequences, labels=labels, return_tensors=None)
    with pytest.raises(ValueError, match=r"sample 2 of this batch has 9 labels for 10 units"):
        MetaEmbedDataCollator(processor)([{key: rows[key][index] for key in rows} for index in range(4)])
    # with per_unit_labels=True even equal lengths are checked against each sample's units
    same_length = ["MKTA", "GSHM"]
    with pytest.raises(ValueError, match=r"sample 0 of this batch has 3 labels for 4 units"):
        processor(same_length, labels=[[0, 1, 0], [1, 0, 1]], per_unit_labels=True)
    # without it, equal-length lists are one row of targets per sample (multi-label), stacked
    assert processor(same_length, labels=[[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])["labels"].shape == (2, 3)


def test_token_labels_through_datasets_and_data_collator_with_padding(saved_processor_folder):
    processor = MetaEmbedProcessor.from_pretrained(saved_processor_folder)
    sequences = ["MKTAYIAK", "GSH", "ACDEFG"]
    labels = [[index % 2 for index in range(len(sequence))] for sequence in sequences]
    table = datasets.Dataset.from_dict({"sequence": sequences, "labels": labels})
    mapped = table.map(lambda batch: processor(batch["sequence"], return_tensors=None), batched=True, batch_size=2)
    batch = DataCollatorWithPadding(processor)([mapped[index] for index in range(3)])
    assert batch["labels"].tolist()[1] == [0, 1, 0] + [-100] * 5


@pytest.mark.parametrize("return_tensors", ["pt", None])
def test_rows_formatted_as_torch_tensors_collate_too(processor, table, return_tensors):
    mapped = table.map(lambda batch: processor(batch["sequence"], return_tensors=return_tensors), batched=True)
    rows = [mapped.with_format("torch")[index] for index in range(len(mapped))]
    expected = processor(table["sequence"], labels=table["label"])
    _assert_same_batch(DataCollatorWithPadding(processor)(rows), expected)
