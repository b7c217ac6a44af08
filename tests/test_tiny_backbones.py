"""Tests for the tiny test backbones in ``tests/tiny_backbones.py``."""

from __future__ import annotations

import random
import string
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, T5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_backbones as tb  # noqa: E402

FAMILIES = list(tb.TINY_BUILDERS)
T5_FAMILIES = {"prott5", "ankh"}
TEXT_FAMILIES = {"bert", "roberta", "static_vectors", "modernbert", "qwen2", "qwen3", "llama", "mistral", "gpt2"}
MODEL_TYPES = {
    "bert": "bert",
    "roberta": "roberta",
    "esm": "esm",
    "prott5": "t5",
    "ankh": "t5",
    "static_vectors": "static_vectors",
    **{name: name for name in ("modernbert", "qwen2", "qwen3", "llama", "mistral", "gpt2")},
}
MAX_LENGTH = 24

# Inputs in each family's own calling convention (a batch of two of unequal length, to exercise padding).
TEXT_INPUTS = ["the movie was not very good!", "great film"]
PROTEINS = ["MKTAYIAKQR", "GSHMLE"]


def encode(family: str, tokenizer, proteins: list[str] = PROTEINS, texts: list[str] = TEXT_INPUTS, **kwargs):
    """Tokenize a padded batch the way a user of that real backbone would."""
    kwargs = {"padding": True, "return_tensors": "pt", **kwargs}
    if tokenizer.pad_token is None:  # Llama, Mistral and GPT-2 ship none; users pad with EOS
        tokenizer.pad_token = tokenizer.eos_token
    if family in TEXT_FAMILIES:
        return tokenizer(texts, **kwargs)
    if family == "esm":
        return tokenizer(proteins, **kwargs)
    if family == "prott5":
        return tokenizer([" ".join(p) for p in proteins], **kwargs)
    return tokenizer([list(p) for p in proteins], is_split_into_words=True, **kwargs)


def load_model(family: str, folder: str) -> PreTrainedModel:
    cls = T5EncoderModel if family in T5_FAMILIES else AutoModel
    return cls.from_pretrained(folder).eval()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return tb.make_all_tiny_backbones(tmp_path_factory.mktemp("tiny"), seed=0, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def tokenizers(saved: dict[str, str]) -> dict[str, object]:
    return {family: AutoTokenizer.from_pretrained(folder) for family, folder in saved.items()}


# ------------------------------------------------------------------------------------ reload / outputs


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_gives_identical_outputs(family: str, tmp_path: Path) -> None:
    model, tokenizer = tb.TINY_BUILDERS[family][0](seed=3, max_length=MAX_LENGTH)
    folder = tb.TINY_BUILDERS[family][1](tmp_path / family, seed=3, max_length=MAX_LENGTH)
    assert folder == str(tmp_path / family)

    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == MODEL_TYPES[family]
    reloaded_tok = AutoTokenizer.from_pretrained(folder)
    reloaded = load_model(family, folder)
    assert not model.training and not reloaded.training

    batch = encode(family, tokenizer)
    reloaded_batch = encode(family, reloaded_tok)
    for key in batch:
        assert torch.equal(batch[key], reloaded_batch[key]), key
    assert reloaded_tok.model_max_length == tokenizer.model_max_length

    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        got = reloaded(**reloaded_batch).last_hidden_state
    assert expected.shape == (2, batch["input_ids"].shape[1], 16)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # Different tokens give different states (the random model is not degenerate).
    assert not torch.allclose(expected[0, 1], expected[0, 2])


@pytest.mark.parametrize("family", FAMILIES)
def test_seed_determinism(family: str) -> None:
    build = tb.TINY_BUILDERS[family][0]
    state_before = torch.random.get_rng_state()
    a, _ = build(seed=0, max_length=MAX_LENGTH)
    assert torch.equal(torch.random.get_rng_state(), state_before), "builders must not touch the global RNG"
    b, _ = build(seed=0, max_length=MAX_LENGTH)
    c, _ = build(seed=1, max_length=MAX_LENGTH)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("family", FAMILIES)
def test_models_are_tiny(family: str, saved: dict[str, str]) -> None:
    model, _ = tb.TINY_BUILDERS[family][0]()
    assert 1_000 < n_params(model) < 100_000
    assert 1_000 < n_params(load_model(family, saved[family])) < 100_000


@pytest.mark.parametrize("family", FAMILIES)
def test_build_is_fast(family: str, tmp_path: Path) -> None:
    make = tb.TINY_BUILDERS[family][1]
    make(tmp_path / "warmup")  # first call pays for lazy imports
    start = time.perf_counter()
    make(tmp_path / "timed")
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("family", FAMILIES)
def test_full_length_input_runs(family: str, tokenizers: dict[str, object], saved: dict[str, str]) -> None:
    """A sequence truncated to ``model_max_length`` fits the model's position table."""
    tokenizer = tokenizers[family]
    long_protein = "ACDEFGHIKLMNPQRSTVWY" * 5
    long_text = " ".join(["good movie"] * 50)
    batch = encode(family, tokenizer, proteins=[long_protein], texts=[long_text], truncation=True)
    assert batch["input_ids"].shape[1] == tokenizer.model_max_length
    with torch.no_grad():
        out = load_model(family, saved[family])(**batch).last_hidden_state
    assert out.shape[:2] == batch["input_ids"].shape


def test_max_length_bookkeeping(saved: dict[str, str], tokenizers: dict[str, object]) -> None:
    assert tokenizers["bert"].model_max_length == MAX_LENGTH
    assert AutoConfig.from_pretrained(saved["bert"]).max_position_embeddings == MAX_LENGTH
    assert tokenizers["roberta"].model_max_length == MAX_LENGTH
    assert AutoConfig.from_pretrained(saved["roberta"]).max_position_embeddings == MAX_LENGTH + 2
    assert tokenizers["esm"].model_max_length == MAX_LENGTH + 2
    assert AutoConfig.from_pretrained(saved["esm"]).max_position_embeddings == MAX_LENGTH + 2
    assert tokenizers["prott5"].model_max_length == MAX_LENGTH + 1
    assert tokenizers["ankh"].model_max_length == MAX_LENGTH + 1


# -------------------------------------------------------------------------------------------- ESM-2


def test_esm_config_matches_esm2(saved: dict[str, str]) -> None:
    config = AutoConfig.from_pretrained(saved["esm"])
    assert config.vocab_size == 33
    assert config.pad_token_id == 1
    assert config.mask_token_id == 32
    assert config.position_embedding_type == "rotary"
    assert config.emb_layer_norm_before is False
    assert config.token_dropout is True


def test_esm_tokenizer_vocab_and_layout(tokenizers: dict[str, object]) -> None:
    tok = tokenizers["esm"]
    assert [tok.convert_ids_to_tokens(i) for i in range(33)] == tb.ESM2_VOCAB
    assert (tok.cls_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id) == (
        0,
        1,
        2,
        3,
        32,
    )
    seq = "MKTAYIAKQRXBUZO"
    ids = tok(seq)["input_ids"]
    assert len(ids) == len(seq) + 2
    assert tok.convert_ids_to_tokens(ids) == ["<cls>", *seq, "<eos>"]
    assert tok.unk_token_id not in ids


# ------------------------------------------------------------------------------------------- ProtT5


def test_prott5_tokenizer_one_token_per_residue(tokenizers: dict[str, object]) -> None:
    tok = tokenizers["prott5"]
    seq = "MKTAYIAKQRX"
    enc = tok(" ".join(seq))
    assert enc.tokens() == [f"▁{aa}" for aa in seq] + ["</s>"]
    assert enc["input_ids"][-1] == tok.eos_token_id == 1
    assert tok.pad_token_id == 0 and tok.unk_token_id == 2
    assert tok.unk_token_id not in enc["input_ids"]
    assert enc.word_ids() == [*range(len(seq)), None]
    # is_split_into_words with single letters gives the same ids.
    assert tok(list(seq), is_split_into_words=True)["input_ids"] == enc["input_ids"]
    # Rare residues have no piece (ProtT5 users map U/Z/O/B to X).
    assert tok("M U")["input_ids"] == [tok.convert_tokens_to_ids("▁M"), tok.unk_token_id, tok.eos_token_id]
    assert len(tok) == 3 + len(tb.PROTT5_RESIDUES)


# --------------------------------------------------------------------------------------------- Ankh


def test_ankh_tokenizer_one_token_per_residue(tokenizers: dict[str, object]) -> None:
    tok = tokenizers["ankh"]
    seq = "MKTAYIAKQRXUZOB"
    enc = tok(list(seq), is_split_into_words=True)
    assert enc.tokens() == [*seq, "</s>"]
    assert enc.word_ids() == [*range(len(seq)), None]
    assert tok.unk_token_id not in enc["input_ids"]
    assert tok(seq)["input_ids"] == enc["input_ids"]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok(["J"], is_split_into_words=True)["input_ids"] == [tok.unk_token_id, tok.eos_token_id]
    assert AutoConfig.from_pretrained(tok.name_or_path).vocab_size == len(tok)


# --------------------------------------------------------------------------------------- text models


def test_bert_word_ids_map_pieces_to_words(tokenizers: dict[str, object]) -> None:
    tok = tokenizers["bert"]
    words = ["The", "movie", "was", "unbelievably", "good", "!"]
    enc = tok(words, is_split_into_words=True)
    tokens, word_ids = enc.tokens(), enc.word_ids()
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert word_ids[0] is None and word_ids[-1] is None
    inner = word_ids[1:-1]
    assert sorted(set(inner)) == list(range(len(words)))
    assert inner == sorted(inner)
    assert inner.count(3) > 1  # "unbelievably" splits into several pieces
    pieces = [t for t, w in zip(tokens, word_ids) if w == 3]
    assert pieces[0] == "u" and all(p.startswith("##") for p in pieces[1:])
    assert "".join(p.removeprefix("##") for p in pieces) == "unbelievably"
    assert tok.unk_token_id not in enc["input_ids"]


def test_bert_any_lowercase_ascii_word_has_no_unk(tokenizers: dict[str, object]) -> None:
    tok = tokenizers["bert"]
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(1, 12))) for _ in range(200)]
    ids = tok(words, is_split_into_words=True)["input_ids"]
    assert tok.unk_token_id not in ids


def test_roberta_word_ids_and_byte_coverage(tokenizers: dict[str, object]) -> None:
    tok = tokenizers["roberta"]
    words = ["The", "movie", "wasn't", "naïve", "🙂", "good"]
    enc = tok(words, is_split_into_words=True)
    tokens, word_ids = enc.tokens(), enc.word_ids()
    assert tokens[0] == "<s>" and tokens[-1] == "</s>"
    assert word_ids[0] is None and word_ids[-1] is None
    inner = word_ids[1:-1]
    assert sorted(set(inner)) == list(range(len(words)))
    assert inner == sorted(inner)
    assert tok.unk_token_id not in enc["input_ids"]
    assert tokens[word_ids.index(1)] == "Ġmovie"  # merges give whole-word pieces for common words
    assert tok.decode(tok("Grüße, the movie! 🙂")["input_ids"], skip_special_tokens=True).strip() == (
        "Grüße, the movie! 🙂"
    )
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
