"""The server's model side without HTTP: pair models through `/embed`'s engine, and `hf-metaembed serve` refusing
bad options before any worker starts."""

import asyncio

import numpy as np
import pytest
import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.cli import main
from hf_metaembed.serve import ServeSettings
from hf_metaembed.serve.batcher import DynamicBatcher, QueueFull
from hf_metaembed.serve.engine import Engine, InputRejected, Job

COMPLEXES = [
    {"ligand": ["MKTAYIAKQR", "GSHM"], "receptor": ["MVLSPADKTNVKAAW"]},
    {"ligand": ["MVLSPA"], "receptor": ["GSHMVLSPADK", "AW"]},
]


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory, tiny_esm, tiny_prott5) -> str:
    torch.manual_seed(0)
    backbones = [tiny_esm, tiny_prott5]
    folder = tmp_path_factory.mktemp("pair") / "hp"
    MetaEmbedModel.from_backbones(backbones, fusion="dme", architecture="hp").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones(backbones, architecture="hp").save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def engine(pair_folder) -> Engine:
    return Engine(ServeSettings(model=pair_folder, device="cpu", max_input_length=40))


def test_pair_model_embeddings_and_segments_equal_the_model(engine, pair_folder):
    rows = engine.encode(COMPLEXES)
    results = engine.run_batch([Job(row, unit_embeddings=True, fusion_weights=True) for row in rows])
    model = MetaEmbedModel.from_pretrained(pair_folder).eval()
    processor = MetaEmbedProcessor.from_pretrained(pair_folder)
    batch = processor(ligand=[c["ligand"] for c in COMPLEXES], receptor=[c["receptor"] for c in COMPLEXES])
    with torch.no_grad():
        expected = model(**batch)
    embeddings = np.stack([result["embedding"].numpy() for result in results])
    np.testing.assert_allclose(embeddings, expected.pooler_output.numpy(), atol=1e-5, rtol=0)
    # hp reads every chain alone: one segment per chain, ligand chains first
    segments = results[0]["segments"]
    assert [segment["side"] for segment in segments] == ["ligand", "ligand", "receptor"]
    assert [len(segment["unit_embeddings"]) for segment in segments] == [10, 4, 15]
    np.testing.assert_allclose(
        segments[1]["fusion_weights"].numpy(), expected.fusion_weights[1, :4].numpy(), atol=1e-5
    )


@pytest.mark.parametrize(
    "item, words",
    [
        ("MKTAYIAK", "this model pairs complexes"),
        ({"ligand": [], "receptor": ["MKT"]}, "ligand must be a non-empty list"),
        ({"ligand": ["MKT"], "receptor": ["A" * 41]}, "input 0 receptor chain 0 has 41 characters"),
        ({"ligand": ["MKT"], "receptor": ["MK#T"]}, "input 0 (receptor)"),
    ],
)
def test_bad_complex_is_rejected_with_its_position(engine, item, words):
    with pytest.raises(InputRejected) as caught:
        engine.encode([item])
    assert words in str(caught.value)


def test_batcher_refuses_past_its_queue_and_batches_what_waits():
    calls = []

    def run_batch(jobs):
        calls.append(list(jobs))
        return [job * 10 for job in jobs]

    async def scenario():
        batcher = DynamicBatcher(run_batch, 64, 1, max_batch_size=8, max_wait=0.2, max_queue=3)
        batcher.start()
        rows = [{"input_ids": [[[1] * 5]], "token_unit_index": [[[0] * 5]], "unit_mask": [[1] * 5]}] * 3
        first = asyncio.ensure_future(batcher.submit([1, 2], rows[:2]))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull, match="holds 2 of at most 3"):
            await batcher.submit([3, 4], rows[:2])
        second = await batcher.submit([5], rows[:1])
        assert await first == [10, 20] and second == [50]
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [[1, 2, 5]], "inputs of two requests waiting together run in one batch"


def test_serve_refuses_bad_options_before_starting(tmp_path, pair_folder, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["serve", "--model", pair_folder, "--device", "cuda"]) == 2
        assert "--device cuda" in capsys.readouterr().err
    assert main(["serve", "--model", pair_folder, "--workers", "0"]) == 2
    assert "--workers must be a positive integer" in capsys.readouterr().err


def test_bfloat16_engine_runs_in_bfloat16_and_stays_close(engine, pair_folder):
    low = Engine(ServeSettings(model=pair_folder, device="cpu", dtype="bfloat16"))
    assert next(low.model.parameters()).dtype == torch.bfloat16
    rows = low.encode(COMPLEXES)
    got = np.stack([result["embedding"].numpy() for result in low.run_batch([Job(row) for row in rows])])
    want = np.stack([result["embedding"].numpy() for result in engine.run_batch([Job(row) for row in rows])])
    assert got.dtype == np.float32
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() > 0.98


def test_serve_names_a_hub_id_it_cannot_reach_offline(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["serve", "--model", "nobody-here/no-such-metaembed-model"]) == 2
    message = capsys.readouterr().err
    assert "'nobody-here/no-such-metaembed-model' is neither a local folder nor a reachable Hub repo" in message
    assert "HF_HUB_OFFLINE=1" in message
