"""Tests of the frozen-feature cache: cached equals online for every registered architecture and fusion, dedup,
resume after an interruption, refusal of a foreign fingerprint or a corrupted shard, Trainer and CLI entry."""

import copy
import csv
import json
import os
import pickle

import pytest
import tiny_backbones as tb
import torch

import hf_metaembed.cache.build as cache_build
from hf_metaembed import (
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedProcessor,
    list_architectures,
    list_fusions,
    list_heads,
)
from hf_metaembed.cache import (
    CachedFeatureCollator,
    CachedFeatureDataset,
    CacheFingerprintError,
    CorruptShardError,
    FeatureCache,
    MissingSegmentError,
    UncacheableModelError,
    build_feature_cache,
    load_feature_cache,
    segment_key,
)
from hf_metaembed.cli import EXIT_OK, EXIT_USAGE, main
from hf_metaembed.modeling.backbones import load_backbone

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAIR_ARCHITECTURES = [name for name in list_architectures() if name != "single"]
CHAINS = ["MKTAYIAKQR", "GSHMLE", "VLSPADKTNV", "ACDEFGHIK", "WYPRQ"]
# complexes that share chains (as mutant series share partners); short enough for a joined `sc` input
LIGAND = [[CHAINS[0]], [CHAINS[0], CHAINS[1]], [CHAINS[2]], [CHAINS[1].lower()], [CHAINS[3], CHAINS[4]]]
RECEPTOR = [[CHAINS[1]], [CHAINS[2]], [CHAINS[0], CHAINS[4]], [CHAINS[0]], [CHAINS[2]]]
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLE", "mktayiakqrqisfvkshfsrq", "VLSPADKTNVKAAW", "GSHMLE"]
LABELS = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5])


@pytest.fixture(scope="module")
def backbone_dirs(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("backbones")
    return [tb.make_tiny_esm(root / "esm"), tb.make_tiny_prott5(root / "prott5")]


@pytest.fixture(scope="module")
def backbones(backbone_dirs):
    """Loaded once; every model of this module shares these frozen backbones."""
    return [load_backbone(path, index=index) for index, path in enumerate(backbone_dirs)]


@pytest.fixture(scope="module")
def processor(backbone_dirs) -> MetaEmbedProcessor:
    return MetaEmbedProcessor.from_backbones(backbone_dirs)


def make_model(backbones, **settings) -> MetaEmbedForSequenceClassification:
    settings.setdefault("num_labels", 1)
    settings.setdefault("unit_types", ["residue", "residue"])  # skips reloading tokenizers to guess them
    return MetaEmbedForSequenceClassification.from_backbones(backbones, **settings).eval()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory, backbones, processor) -> FeatureCache:
    """One cache holding the segments of every registered architecture (built twice into the same folder)."""
    folder = tmp_path_factory.mktemp("shared_cache")
    model = make_model(backbones)
    build_feature_cache(model, processor, folder, sequences=SEQUENCES, architecture="single", progress=False)
    if PAIR_ARCHITECTURES:
        build_feature_cache(
            model, processor, folder, ligand=LIGAND, receptor=RECEPTOR, architecture=PAIR_ARCHITECTURES, progress=False
        )
    return FeatureCache(folder)


def inputs_for(architecture: str) -> dict:
    if architecture == "single":
        return {"sequences": SEQUENCES}
    return {"ligand": LIGAND, "receptor": RECEPTOR}


def cached_batch(cache, architecture: str, labels=None) -> dict:
    dataset = CachedFeatureDataset(cache, **inputs_for(architecture), labels=labels, architecture=architecture)
    return CachedFeatureCollator()([dataset[i] for i in range(len(dataset))])


def online_batch(processor, architecture: str) -> dict:
    return dict(processor(**inputs_for(architecture), architecture=architecture))


@pytest.mark.parametrize("fusion", list_fusions())
@pytest.mark.parametrize("architecture", list_architectures())
def test_cached_equals_online(architecture, fusion, backbones, processor, shared_cache):
    model = make_model(backbones, fusion=fusion, architecture=architecture)
    cache = load_feature_cache(shared_cache.path, model, processor)
    with torch.no_grad():
        online = model(**online_batch(processor, architecture))
        cached = model(**cached_batch(cache, architecture))
    assert cached.logits.shape == online.logits.shape == (len(LABELS), 1)
    torch.testing.assert_close(cached.logits, online.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.pooler_output, online.pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", list_heads())
def test_cached_equals_online_for_every_head(head, backbones, processor, shared_cache):
    architecture = PAIR_ARCHITECTURES[-1] if PAIR_ARCHITECTURES else "single"
    model = make_model(backbones, head=head, architecture=architecture)
    with torch.no_grad():
        online = model(**online_batch(processor, architecture)).logits
        cached = model(**cached_batch(shared_cache, architecture)).logits
    torch.testing.assert_close(cached, online, atol=1e-5, rtol=0)


def test_training_step_from_cache_matches_online(backbones, processor, shared_cache):
    architecture = PAIR_ARCHITECTURES[0] if PAIR_ARCHITECTURES else "single"
    model = make_model(backbones, fusion="dme", architecture=architecture, head_dropout=0.0).train()
    gradients = []
    for batch in (online_batch(processor, architecture), cached_batch(shared_cache, architecture)):
        model.zero_grad()
        loss = model(**batch, labels=LABELS).loss
        loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 0
    assert not any(name.startswith("metaembed.backbone_") for name in gradients[0])
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "settings",
    [{"level": "sequence", "pooling": "mean"}, {"level": "sequence", "pooling": "max"}, {"layers": ["mix", -2]}],
)
def test_sequence_level_and_layer_choices_cache_exactly(settings, backbones, processor, tmp_path):
    model = make_model(backbones, **settings)
    build_feature_cache(model, processor, tmp_path, sequences=SEQUENCES, progress=False)
    cache = load_feature_cache(tmp_path, model, processor)
    with torch.no_grad():
        online = model(**online_batch(processor, "single")).logits
        cached = model(**cached_batch(cache, "single")).logits
    torch.testing.assert_close(cached, online, atol=1e-5, rtol=0)


def test_token_classification_from_cache(backbones, processor, shared_cache):
    model = MetaEmbedForTokenClassification.from_backbones(backbones, num_labels=3, unit_types=["residue"] * 2).eval()
    unit_labels = [[i % 3 for i in range(len(s))] for s in SEQUENCES]
    dataset = CachedFeatureDataset(shared_cache, sequences=SEQUENCES, labels=unit_labels)
    batch = CachedFeatureCollator(per_unit_labels=True)([dataset[i] for i in range(len(dataset))])
    assert batch["labels"].shape == batch["unit_mask"].shape
    assert (batch["labels"][batch["unit_mask"] == 0] == -100).all()
    with torch.no_grad():
        cached = model(**batch)
        online = model(**online_batch(processor, "single"))
    torch.testing.assert_close(cached.logits, online.logits, atol=1e-5, rtol=0)
    assert torch.isfinite(cached.loss)


def count_backbone_rows(model) -> tuple[list[int], list]:
    """Segments (batch rows) each backbone has run over, counted by forward hooks."""
    rows = [0] * model.config.num_backbones
    hooks = []
    for index, backbone in enumerate(model.metaembed.backbones):

        def hook(module, args, kwargs, output, index=index):
            rows[index] += kwargs["input_ids"].shape[0]

        hooks.append(backbone.register_forward_hook(hook, with_kwargs=True))
    return rows, hooks


def test_each_unique_segment_runs_once(backbones, processor, tmp_path):
    # every chain of the 8 complexes is one of 3, with case and spacing variants that the processor reads the same
    pool = ["MKTAYIAKQR", "GSHMLE", "VLSPADKTNV"]
    variants = [pool[0], pool[0].lower(), " ".join(pool[0])]
    ligand = [[variants[i % 3]] for i in range(8)]
    receptor = [[pool[1], pool[2]] if i % 2 else [pool[2]] for i in range(8)]
    model = make_model(backbones, architecture="hp")
    rows, hooks = count_backbone_rows(model)
    cache = build_feature_cache(model, processor, tmp_path, ligand=ligand, receptor=receptor, progress=False)
    assert cache.build_summary == {
        "segments_read": 8 + 12,
        "unique_segments": 3,
        "reused": 0,
        "computed": 3,
        "shards_written": 1,
    }
    assert len(cache) == 3 and sum(record["segments"] for record in cache.shards.values()) == 3
    assert rows == [3, 3]
    again = build_feature_cache(model, processor, tmp_path, ligand=ligand, receptor=receptor, progress=False)
    assert again.build_summary["computed"] == 0 and again.build_summary["reused"] == 3 and rows == [3, 3]
    for hook in hooks:
        hook.remove()


def test_build_tokenizes_each_unique_segment_once_and_names_bad_samples(backbones, processor, tmp_path, monkeypatch):
    model = make_model(backbones, architecture="hp")
    calls = []
    original = MetaEmbedProcessor.encode_segment

    def counting(self, chains, **kwargs):
        calls.append(tuple(chains))
        return original(self, chains, **kwargs)

    monkeypatch.setattr(MetaEmbedProcessor, "encode_segment", counting)
    ligand = [[CHAINS[0], CHAINS[1]]] * 6 + [[CHAINS[2]]]
    receptor = [[CHAINS[3]]] * 7
    build_feature_cache(model, processor, tmp_path / "ok", ligand=ligand, receptor=receptor, progress=False)
    assert sorted(calls) == sorted({(CHAINS[i],) for i in range(4)})  # 4 unique chains of 21 read, once each
    bad_ligand = ligand + [[CHAINS[0], "MKT1A"]]
    with pytest.raises(ValueError, match=r"^sample 7 \(ligand\): \['1'\] are not amino-acid letters"):
        build_feature_cache(model, processor, tmp_path / "bad", ligand=bad_ligand, receptor=receptor + [["GSH"]])


def test_resume_after_interruption_gives_the_same_cache(backbones, processor, tmp_path, monkeypatch):
    model = make_model(backbones)
    sequences = [CHAINS[i % 5] * (1 + i % 2) for i in range(12)]  # 10 unique
    tiny_shards = {"sequences": sequences, "shard_size_mb": 1e-6, "batch_size": 2, "progress": False}
    reference = build_feature_cache(model, processor, tmp_path / "whole", **tiny_shards)
    assert len(reference.shards) == 10

    real_write = cache_build.write_shard
    written = []

    def write_then_fail(*args, **kwargs):
        if len(written) == 4:
            raise KeyboardInterrupt("simulated interruption")
        written.append(args[1])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(cache_build, "write_shard", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(model, processor, tmp_path / "resumed", **tiny_shards)
    monkeypatch.setattr(cache_build, "write_shard", real_write)
    (tmp_path / "resumed" / ".shard-00004.safetensors.tmp").write_bytes(b"half a shard")
    assert len(FeatureCache(tmp_path / "resumed").shards) == 4

    resumed = build_feature_cache(model, processor, tmp_path / "resumed", **tiny_shards)
    assert resumed.build_summary["reused"] == 4 and resumed.build_summary["computed"] == 6
    assert resumed.shards == reference.shards  # same names, sizes and sha256: byte-identical shards
    assert not list((tmp_path / "resumed").glob(".*.tmp"))
    for key in reference.keys():
        for got, expected in zip(resumed[key], reference[key]):
            assert torch.equal(got, expected)


def test_reading_is_lazy_streamed_and_bounded(backbones, processor, tmp_path):
    model = make_model(backbones)
    build_feature_cache(model, processor, tmp_path, sequences=SEQUENCES, shard_size_mb=1e-6, progress=False)
    cache = FeatureCache(tmp_path, max_open_shards=2)
    assert len(cache.shards) == 3 and not cache._handles and not cache._verified  # opening reads headers only
    dataset = CachedFeatureDataset(cache, sequences=SEQUENCES)
    first = dataset[0]["backbone_states"][0][0]
    assert len(cache._verified) == 1 and len(cache._handles) == 1  # one shard checked and mapped, no other
    for index in range(len(dataset)):
        dataset[index]
    assert len(cache._handles) <= 2 and cache._verified == set(cache.shards)
    clone = pickle.loads(pickle.dumps(cache))  # as a spawned DataLoader worker receives it
    assert not clone._handles and torch.equal(
        CachedFeatureDataset(clone, sequences=SEQUENCES)[0]["backbone_states"][0][0], first
    )


def test_fingerprint_mismatch_is_refused(backbones, backbone_dirs, processor, tmp_path):
    model = make_model(backbones)
    build_feature_cache(model, processor, tmp_path, sequences=SEQUENCES, progress=False)

    other_layer = make_model(backbones, layers=[-2, "last"])
    with pytest.raises(CacheFingerprintError, match=r"backbones\[0\]\.layer: cache has 'last', this model has -2"):
        load_feature_cache(tmp_path, other_layer, processor)

    changed = copy.deepcopy(backbones)
    with torch.no_grad():
        next(changed[1].parameters()).add_(1e-3)
    with pytest.raises(CacheFingerprintError, match=r"backbones\[1\]\.weights_sha256") as raised:
        load_feature_cache(tmp_path, make_model(changed), processor)
    assert "backbones[0]" not in str(raised.value)

    truncating = MetaEmbedProcessor.from_backbones(backbone_dirs, truncation=True)
    with pytest.raises(CacheFingerprintError, match=r"processor\.truncation: cache has False"):
        load_feature_cache(tmp_path, model, truncating)
    with pytest.raises(CacheFingerprintError, match="overwrite=True"):
        build_feature_cache(other_layer, processor, tmp_path, sequences=SEQUENCES, progress=False)
    rebuilt = build_feature_cache(
        other_layer, processor, tmp_path, sequences=SEQUENCES, overwrite=True, progress=False
    )
    rebuilt.check(other_layer, processor)


def test_corrupted_or_truncated_shard_is_refused_and_rebuilt(backbones, processor, tmp_path):
    model = make_model(backbones)
    options = {"sequences": SEQUENCES, "shard_size_mb": 1e-6, "progress": False}
    original = build_feature_cache(model, processor, tmp_path, **options)
    expected = {key: [s.clone() for s in original[key]] for key in original.keys()}  # reads are file-backed
    name = sorted(original.shards)[1]
    shard = tmp_path / name
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF  # inside the last tensor's bytes: the header still parses
    shard.write_bytes(bytes(data))
    cache = FeatureCache(tmp_path)
    key = next(k for k in cache.keys() if cache._locations[k][0] == name)
    with pytest.raises(CorruptShardError, match=rf"shard {name} .* corrupted: sha256"):
        cache[key]
    sample = next(i for i, s in enumerate(SEQUENCES) if segment_key([s], cache.unit_types) == key)
    with pytest.raises(CorruptShardError, match=name):
        CachedFeatureDataset(cache, sequences=SEQUENCES)[sample]

    shard.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CorruptShardError, match=rf"shard {name} .* bytes but the index records"):
        FeatureCache(tmp_path)

    with pytest.warns(UserWarning, match=rf"shard {name} .* truncated; recomputing"):
        repaired = build_feature_cache(model, processor, tmp_path, **options)
    assert repaired.build_summary["computed"] == 1
    assert not (tmp_path / name).exists()
    for key, states in expected.items():
        assert all(torch.equal(a, b) for a, b in zip(repaired[key], states))


def test_uncacheable_models_are_refused(backbones, processor, tmp_path):
    attention = make_model(backbones, level="sequence", pooling="attention")
    with pytest.raises(UncacheableModelError, match="pooling='attention'"):
        build_feature_cache(attention, processor, tmp_path, sequences=SEQUENCES, progress=False)
    mixed = make_model(backbones, level="sequence", layers=["mix", "last"])
    with pytest.raises(UncacheableModelError, match=r"'mix' layer \(backbones \[0\]\)"):
        build_feature_cache(mixed, processor, tmp_path, sequences=SEQUENCES, progress=False)
    trainable = make_model(copy.deepcopy(backbones))
    trainable.metaembed.unfreeze_backbones()
    with pytest.raises(UncacheableModelError, match="backbone 0 .* is trainable"):
        build_feature_cache(trainable, processor, tmp_path, sequences=SEQUENCES, progress=False)


def test_missing_segment_is_reported_by_sample(shared_cache):
    with pytest.raises(MissingSegmentError, match=r"1 samples \(first: \[2\]\)"):
        CachedFeatureDataset(shared_cache, sequences=[SEQUENCES[0], SEQUENCES[1], "MMMMMMMM"])


def test_trainer_trains_from_the_cache(backbones, processor, shared_cache, tmp_path):
    from transformers import Trainer, TrainingArguments

    architecture = PAIR_ARCHITECTURES[0] if PAIR_ARCHITECTURES else "single"
    model = make_model(backbones, architecture=architecture).train()
    dataset = CachedFeatureDataset(shared_cache, **inputs_for(architecture), labels=LABELS, architecture=architecture)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    arguments = TrainingArguments(
        tmp_path, max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2, report_to=[], save_strategy="no"
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=dataset, data_collator=CachedFeatureCollator())
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert "classifier.out_proj.weight" in moved
    assert all(torch.equal(p, q) for p, q in zip(backbones[0].parameters(), model.metaembed.backbone_0.parameters()))


def test_command_line_builds_a_cache_from_jsonl_and_csv(backbone_dirs, backbones, processor, tmp_path, capsys):
    lines = tmp_path / "sequences.jsonl"
    lines.write_text("\n".join(json.dumps({"sequence": s}) for s in SEQUENCES) + "\n")
    command = ["cache", str(lines), str(tmp_path / "jsonl"), "--backbones", *backbone_dirs, "--no-progress"]
    assert main(command) == EXIT_OK
    assert "cached 3 new segments (0 reused; 3 unique of 5 read)" in capsys.readouterr().out
    cache = load_feature_cache(tmp_path / "jsonl", make_model(backbones), processor)
    assert len(cache) == 3  # two sequences come twice, once in lower case
    CachedFeatureDataset(cache, sequences=SEQUENCES)

    command = ["cache", str(lines), str(tmp_path / "bad"), "--backbones", *backbone_dirs, "--sequence-column", "x"]
    assert main(command) == EXIT_USAGE  # an input error, as in every hf-metaembed subcommand
    assert "hf-metaembed cache: error: sequences.jsonl line 1 (record 1): no column 'x'" in capsys.readouterr().err

    assert PAIR_ARCHITECTURES
    table = tmp_path / "complexes.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ligand_a", "ligand_b", "receptor", "affinity"])
        for lig, rec, label in zip(LIGAND, RECEPTOR, LABELS.tolist()):
            writer.writerow([lig[0], lig[1] if len(lig) > 1 else "", ",".join(rec), label])
    command = ["cache", str(table), str(tmp_path / "csv"), "--backbones", *backbone_dirs]
    command += ["--architecture", *PAIR_ARCHITECTURES, "--ligand-columns", "ligand_a", "ligand_b"]
    assert main(command + ["--receptor-columns", "receptor", "--no-progress"]) == EXIT_OK
    cache = load_feature_cache(tmp_path / "csv", make_model(backbones), processor)
    for architecture in PAIR_ARCHITECTURES:
        CachedFeatureDataset(cache, ligand=LIGAND, receptor=RECEPTOR, architecture=architecture)
