"""`hf-metaembed serve` as a real server: started in a subprocess on a free local port, called over HTTP.

Two servers per module: one with two workers serving a two-backbone DME classifier (ESM-style + T5-style tiny
backbones) for the values, the formats and every bad request; one with a small queue, a long batching wait and an API
key for the 503, the key and SIGTERM during a request.
"""

import base64
import signal
import threading
import time

import numpy as np
import pytest
import torch
from serving import Server

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.modeling.pipeline_metaembed import MetaEmbedTextClassificationPipeline

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMVL", "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMF", "AW"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_esm, tiny_prott5) -> str:
    torch.manual_seed(0)
    backbones = [tiny_esm, tiny_prott5]
    model = MetaEmbedForSequenceClassification.from_backbones(backbones, fusion="dme", num_labels=3)
    folder = tmp_path_factory.mktemp("served") / "dme-classifier"
    model.save_pretrained(folder)
    MetaEmbedProcessor.from_backbones(backbones).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def reference(model_folder):
    """The saved model itself, loaded in the test process: (classifier, processor)."""
    model = MetaEmbedForSequenceClassification.from_pretrained(model_folder).eval()
    return model, MetaEmbedProcessor.from_pretrained(model_folder)


@pytest.fixture(scope="module")
def server(model_folder, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "server.log"
    options = ["--workers", "2", "--max-wait-ms", "50", "--max-input-length", "200", "--max-request-bytes", "20000"]
    running = Server(model_folder, *options, log_path=str(log))
    running.log_path = log
    try:
        running.pids = running.wait_ready(workers=2)
        yield running
    finally:
        running.stop()


def pooled(reference, sequences) -> np.ndarray:
    model, processor = reference
    with torch.no_grad():
        return model.base_model(**processor(sequences)).pooler_output.numpy()


def test_two_workers_each_loaded_the_model(server):
    assert len(server.pids) == 2
    status, body, _ = server.request("GET", "/health")
    assert (status, body) == (200, {"status": "ok"})


def test_openai_embeddings_equal_the_models_pooled_output(server, reference):
    status, body, _ = server.request("POST", "/v1/embeddings", {"input": SEQUENCES, "model": "dme-classifier"})
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == "dme-classifier"
    assert [item["index"] for item in body["data"]] == list(range(len(SEQUENCES)))
    assert all(item["object"] == "embedding" for item in body["data"])
    served = np.array([item["embedding"] for item in body["data"]])
    np.testing.assert_allclose(served, pooled(reference, SEQUENCES), atol=1e-4, rtol=0)
    _, processor = reference
    # per input, the most tokens a backbone reads (ESM-2 adds <cls> and <eos> to each sequence)
    tokens = sum(
        max(len(ids) for ids in sample[0]) for sample in processor(SEQUENCES, return_tensors=None)["input_ids"]
    )
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert tokens == len("".join(SEQUENCES)) + 2 * len(SEQUENCES)


def test_one_string_base64_and_dimensions(server, reference):
    expected = pooled(reference, [SEQUENCES[2]])[0]
    status, body, _ = server.request("POST", "/v1/embeddings", {"input": SEQUENCES[2], "encoding_format": "base64"})
    assert status == 200, body
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, expected, atol=1e-4, rtol=0)
    status, body, _ = server.request("POST", "/v1/embeddings", {"input": [SEQUENCES[2]], "dimensions": 5})
    assert status == 200, body
    np.testing.assert_allclose(body["data"][0]["embedding"], expected[:5], atol=1e-4, rtol=0)


def test_embed_gives_unit_embeddings_and_fusion_weights(server, reference):
    model, processor = reference
    body = {"inputs": SEQUENCES[:2], "unit_embeddings": True, "fusion_weights": True}
    status, answer, _ = server.request("POST", "/embed", body)
    assert status == 200, answer
    with torch.no_grad():
        outputs = model.base_model(**processor(SEQUENCES[:2]))
    for index, item in enumerate(answer["data"]):
        units = len(SEQUENCES[index])
        np.testing.assert_allclose(item["embedding"], outputs.pooler_output[index].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(
            item["unit_embeddings"], outputs.last_hidden_state[index, :units].numpy(), atol=1e-4, rtol=0
        )
        weights = np.array(item["fusion_weights"])
        assert weights.shape == (units, 2)
        np.testing.assert_allclose(weights, outputs.fusion_weights[index, :units].numpy(), atol=1e-4, rtol=0)
    status, answer, _ = server.request("POST", "/embed", {"inputs": SEQUENCES[:1]})
    assert status == 200 and set(answer["data"][0]) == {"index", "embedding"}


def test_predict_gives_what_the_text_classification_pipeline_gives(server, reference):
    model, processor = reference
    pipe = MetaEmbedTextClassificationPipeline(model=model, processor=processor)
    expected = pipe(SEQUENCES[:3], top_k=None)
    status, answer, _ = server.request("POST", "/predict", {"inputs": SEQUENCES[:3], "top_k": None})
    assert status == 200, answer
    for item, want in zip(answer["data"], expected):
        assert [p["label"] for p in item["predictions"]] == [w["label"] for w in want]
        np.testing.assert_allclose([p["score"] for p in item["predictions"]], [w["score"] for w in want], atol=1e-4)
    status, answer, _ = server.request("POST", "/predict", {"inputs": SEQUENCES[0]})
    assert status == 200 and len(answer["data"][0]["predictions"]) == 1


BAD_REQUESTS = [
    ("malformed JSON", "/v1/embeddings", b'{"input": ["MKT"', 400, "malformed JSON"),
    ("not an object", "/v1/embeddings", b'["MKT"]', 400, "send a JSON object"),
    ("no input", "/v1/embeddings", b'{"model": "dme-classifier"}', 400, "'input' is required"),
    ("empty list", "/v1/embeddings", b'{"input": []}', 400, "empty list"),
    ("empty string", "/v1/embeddings", b'{"input": ["MKT", "  "]}', 400, "input 1 is empty"),
    ("non-string item", "/v1/embeddings", b'{"input": ["MKT", 7]}', 400, "input 1 is int"),
    ("token ids", "/v1/embeddings", b'{"input": [[1, 2, 3]]}', 400, "token ids"),
    ("unreadable character", "/v1/embeddings", b'{"input": ["MKT", "MK1T"]}', 400, "input 1: ['1']"),
    ("past max input length", "/v1/embeddings", b'{"input": ["' + b"A" * 201 + b'"]}', 400, "--max-input-length"),
    ("past max request bytes", "/v1/embeddings", b'{"input": ["' + b"A" * 30000 + b'"]}', 413, "--max-request-bytes"),
    ("bad dimensions", "/v1/embeddings", b'{"input": "MKT", "dimensions": 0}', 400, "dimensions must be"),
    ("bad encoding", "/v1/embeddings", b'{"input": "MKT", "encoding_format": "hex"}', 400, "encoding_format"),
    ("other model", "/v1/embeddings", b'{"input": "MKT", "model": "gpt-4"}', 404, "not served here"),
    ("bad flag", "/embed", b'{"inputs": ["MKT"], "fusion_weights": "yes"}', 400, "true or false"),
    ("bad top_k", "/predict", b'{"inputs": ["MKT"], "top_k": 0}', 400, "top_k"),
    ("unknown route", "/v2/embeddings", b"{}", 404, "no route"),
]


@pytest.mark.parametrize("name, path, raw, status, words", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_request_is_a_4xx_json_error_and_the_server_goes_on(server, reference, name, path, raw, status, words):
    answer_status, answer, _ = server.request("POST", path, raw=raw)
    assert answer_status == status, answer
    assert words in answer["error"]["message"], answer
    assert answer["error"]["code"] == status
    good_status, good, _ = server.request("POST", "/v1/embeddings", {"input": SEQUENCES[1]})
    assert good_status == 200
    np.testing.assert_allclose(good["data"][0]["embedding"], pooled(reference, [SEQUENCES[1]])[0], atol=1e-4)


def test_concurrent_requests_are_batched_together_and_answered_in_order(server, reference):
    expected = pooled(reference, SEQUENCES)
    answers = [None] * 24

    def call(slot):
        sequence = SEQUENCES[slot % len(SEQUENCES)]
        answers[slot] = server.request("POST", "/v1/embeddings", {"input": [sequence, SEQUENCES[0]]})

    threads = [threading.Thread(target=call, args=(slot,)) for slot in range(len(answers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for slot, (status, body, _) in enumerate(answers):
        assert status == 200, body
        got = np.array([item["embedding"] for item in body["data"]])
        np.testing.assert_allclose(got, expected[[slot % len(SEQUENCES), 0]], atol=1e-4, rtol=0)
    metrics = server.request("GET", "/metrics")[1]
    batches = float(metrics.split("hf_metaembed_batch_inputs_count ")[1].split()[0])
    at_most_two = float(metrics.split('hf_metaembed_batch_inputs_bucket{le="2.0"} ')[1].split()[0])
    assert at_most_two < batches, "concurrent requests (2 inputs each) should have shared a batch"


def test_metrics_and_access_log(server):
    server.request("POST", "/v1/embeddings", {"input": "MKT"}, headers={"X-Request-Id": "trace-me-42"})
    status, text, headers = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in (
        "hf_metaembed_requests_total",
        "hf_metaembed_request_seconds_bucket",
        "hf_metaembed_queue_depth",
        "hf_metaembed_batch_inputs_bucket",
        "hf_metaembed_batch_padded_tokens_bucket",
    ):
        assert name in text
    assert 'route="/v1/embeddings",status="200"' in text
    deadline = time.monotonic() + 5
    while "trace-me-42" not in server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(line for line in server.log_path.read_text().splitlines() if "trace-me-42" in line)
    assert '"path": "/v1/embeddings"' in line and '"status": 200' in line and '"inputs": 1' in line


# ---------------------------------------------------------------------------------------------- queue, key, SIGTERM


@pytest.fixture(scope="module")
def slow_server(model_folder, tmp_path_factory):
    """One worker, a 2-input queue and a 1.5 s batching wait (a lone request waits that long), with an API key."""
    options = ["--max-queue", "2", "--max-wait-ms", "1500"]
    log = tmp_path_factory.mktemp("logs") / "slow_server.log"
    running = Server(model_folder, *options, api_key="s3cret", log_path=str(log))
    running.log_path = log
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_api_key_is_required_except_on_health(slow_server):
    assert slow_server.request("GET", "/health", key=False)[0] == 200
    status, body, headers = slow_server.request("GET", "/ready", key=False)
    assert status == 401 and "API key" in body["error"]["message"] and headers["www-authenticate"] == "Bearer"
    wrong = slow_server.request("GET", "/ready", key=False, headers={"Authorization": "Bearer nope"})
    assert wrong[0] == 401
    assert slow_server.request("GET", "/ready", key=False, headers={"X-API-Key": "s3cret"})[0] == 200
    assert slow_server.request("GET", "/ready")[0] == 200


def _in_background(function):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function()))
    thread.start()
    return thread, result


def test_full_queue_answers_503_with_retry_after(slow_server, reference):
    thread, first = _in_background(lambda: slow_server.request("POST", "/v1/embeddings", {"input": SEQUENCES[:2]}))
    time.sleep(0.5)  # the first request's 2 inputs fill the queue while they wait for company
    started = time.monotonic()
    status, body, headers = slow_server.request("POST", "/v1/embeddings", {"input": [SEQUENCES[2]]})
    assert time.monotonic() - started < 1.0, "a full queue must answer at once"
    assert status == 503 and "queue" in body["error"]["message"]
    assert int(headers["retry-after"]) >= 1
    thread.join()
    status, body, _ = first["value"]
    assert status == 200
    np.testing.assert_allclose([i["embedding"] for i in body["data"]], pooled(reference, SEQUENCES[:2]), atol=1e-4)


def test_sigterm_during_a_request_finishes_it(slow_server, reference):
    thread, answer = _in_background(lambda: slow_server.request("POST", "/v1/embeddings", {"input": SEQUENCES[3]}))
    time.sleep(0.5)  # the request is waiting in the batcher (1.5 s)
    slow_server.process.terminate()
    thread.join()
    status, body, _ = answer["value"]
    assert status == 200, body
    np.testing.assert_allclose(body["data"][0]["embedding"], pooled(reference, [SEQUENCES[3]])[0], atol=1e-4)
    # uvicorn re-raises the signal once it has shut down, so the process ends as SIGTERM asks (143 in a shell)
    assert slow_server.process.wait(30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in slow_server.log_path.read_text()
