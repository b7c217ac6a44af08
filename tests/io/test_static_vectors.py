"""Static word-vector tables: reading each file format, validation errors, and the converted backbone folder."""

import ast
import gzip
import json
import struct
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.dynamic_module_utils import get_class_from_dynamic_module

import hf_metaembed.modeling.static_vectors  # registers the Auto* classes
from hf_metaembed.io.static_vectors import (
    build_static_vectors_tokenizer,
    convert_static_vectors,
    detect_static_vectors_format,
    load_static_vectors,
)
from hf_metaembed.modeling.static_vectors import StaticVectorsConfig, StaticVectorsModel

# Decimals that float32 cannot represent exactly, to check that lookups return the file's values rounded once.
VECTORS = {
    "the": [0.1, -0.2, 0.3],
    "movie": [1.5, 2.25, -3.125],
    "was": [-0.7, 0.01, 1e-3],
    "good": [4.0, -5.5, 6.75],
}
DIM = 3


def write_text(path, rows, header=True, count=None):
    lines = [f"{len(rows) if count is None else count} {DIM}"] if header else []
    lines += [" ".join([word, *(repr(value) for value in vector)]) for word, vector in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_binary(path, rows, count=None, newline=True):
    with open(path, "wb") as file:
        file.write(f"{len(rows) if count is None else count} {DIM}\n".encode())
        for word, vector in rows:
            file.write(word.encode() + b" " + struct.pack(f"<{DIM}f", *vector) + (b"\n" if newline else b""))
    return path


def file_vector(word):
    return torch.tensor(VECTORS[word], dtype=torch.float32)


WRITERS = {
    "word2vec-text": lambda tmp_path: write_text(tmp_path / "vectors.txt", list(VECTORS.items())),
    "fasttext-vec": lambda tmp_path: write_text(tmp_path / "vectors.vec", list(VECTORS.items())),
    "glove": lambda tmp_path: write_text(tmp_path / "glove.txt", list(VECTORS.items()), header=False),
    "word2vec-binary": lambda tmp_path: write_binary(tmp_path / "vectors.bin", list(VECTORS.items())),
}


@pytest.mark.parametrize("source_format", list(WRITERS))
def test_format_detected_and_vectors_read_exactly(tmp_path, source_format):
    path = WRITERS[source_format](tmp_path)
    assert detect_static_vectors_format(path) == source_format
    words, vectors = load_static_vectors(path)
    assert words == list(VECTORS)
    assert vectors.dtype == torch.float32 and vectors.shape == (len(VECTORS), DIM)
    assert torch.equal(vectors, torch.stack([file_vector(word) for word in VECTORS]))


def test_binary_without_newlines_and_misnamed_binary(tmp_path):
    # gensim writes no newline after a vector; a binary file may also carry a text-like name.
    path = write_binary(tmp_path / "vectors.w2v", list(VECTORS.items()), newline=False)
    assert detect_static_vectors_format(path) == "word2vec-binary"
    words, vectors = load_static_vectors(path)
    assert words == list(VECTORS) and torch.equal(vectors[1], file_vector("movie"))


def test_gzip_and_limit(tmp_path):
    path = tmp_path / "vectors.vec.gz"
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.write(write_text(tmp_path / "plain.vec", list(VECTORS.items())).read_text())
    assert detect_static_vectors_format(path) == "fasttext-vec"
    words, vectors = load_static_vectors(path, limit=2)
    assert words == ["the", "movie"] and vectors.shape == (2, DIM)


@pytest.fixture(params=list(WRITERS))
def converted(request, tmp_path):
    path = WRITERS[request.param](tmp_path)
    return request.param, convert_static_vectors(path, tmp_path / "backbone", max_length=64)


def test_converted_folder_reloads_and_looks_up_file_vectors(converted):
    source_format, folder = converted
    config = AutoConfig.from_pretrained(folder)
    assert isinstance(config, StaticVectorsConfig)
    assert (config.vocab_size, config.hidden_size, config.source_format) == (len(VECTORS) + 2, DIM, source_format)
    model = AutoModel.from_pretrained(folder)
    assert isinstance(model, StaticVectorsModel)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.model_max_length) == (0, 1, 64)

    sentences = [["the", "movie", "was", "unseenword", "good"], ["good", "movie"]]
    batch = tokenizer(sentences, is_split_into_words=True, padding=True, return_tensors="pt")
    # One token per word, no special tokens around the sequence.
    assert batch.word_ids(0) == [0, 1, 2, 3, 4]
    assert batch.word_ids(1) == [0, 1, None, None, None]
    assert batch["input_ids"][0, 3].item() == tokenizer.unk_token_id

    with torch.no_grad():
        states = model(**batch).last_hidden_state  # (batch, tokens, dim)
    assert states.shape == (2, 5, DIM)
    for position, word in enumerate(["the", "movie", "was"]):
        assert torch.equal(states[0, position], file_vector(word))
    mean = torch.stack([file_vector(word) for word in VECTORS]).mean(dim=0)
    torch.testing.assert_close(states[0, 3], mean)
    assert torch.equal(states[1, 0], file_vector("good"))
    assert torch.equal(states[1, 2:], torch.zeros(3, DIM))
    assert torch.equal(model.embeddings.weight[0], torch.zeros(DIM))


def test_tokenizer_offsets_and_plain_text(converted):
    _, folder = converted
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoding = tokenizer("the  movie\twas", return_offsets_mapping=True)
    assert encoding["input_ids"] == [2, 3, 4]
    assert encoding["offset_mapping"] == [(0, 3), (5, 10), (11, 14)]


def test_model_file_imports_only_torch_transformers_and_the_standard_library():
    tree = ast.parse(Path(hf_metaembed.modeling.static_vectors.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(node.level for node in ast.walk(tree) if isinstance(node, ast.ImportFrom))
    top_level = {name.split(".")[0] for name in imported}
    assert top_level - sys.stdlib_module_names <= {"torch", "transformers"}


def test_converted_folder_carries_its_remote_code(tmp_path):
    folder = convert_static_vectors(WRITERS["fasttext-vec"](tmp_path), tmp_path / "static_vectors_remote")
    auto_map = json.loads((tmp_path / "static_vectors_remote" / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "static_vectors.StaticVectorsConfig",
        "AutoModel": "static_vectors.StaticVectorsModel",
    }
    # What `trust_remote_code=True` does where the library is not installed: import the copied file.
    remote_class = get_class_from_dynamic_module(auto_map["AutoModel"], folder)
    assert remote_class is not StaticVectorsModel and remote_class.__module__.startswith("transformers_modules")
    model = remote_class.from_pretrained(folder)
    assert torch.equal(model(input_ids=torch.tensor([[3]])).last_hidden_state[0, 0], file_vector("movie"))
    # Importing the second copy left the library's classes registered.
    assert type(AutoConfig.for_model("static_vectors")) is StaticVectorsConfig


def test_lowercase_keeps_first_of_colliding_words(tmp_path):
    rows = [("The", [1.0, 2.0, 3.0]), ("the", [9.0, 9.0, 9.0]), ("Movie", [4.0, 5.0, 6.0])]
    path = write_text(tmp_path / "cased.vec", rows)
    with pytest.warns(UserWarning, match="1 duplicate word"):
        folder = convert_static_vectors(path, tmp_path / "backbone", lowercase=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder)
    ids = tokenizer(["THE", "movie"], is_split_into_words=True, return_tensors="pt")["input_ids"]
    assert ids.tolist() == [[2, 3]]
    assert model(input_ids=ids).last_hidden_state[0].tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_duplicates_and_unreachable_words_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "glove.txt"
    # GloVe 840B holds words with spaces such as ". . ."; a whitespace tokenizer can never produce them.
    path.write_text("the 1 2 3\n. . . 4 5 6\nthe 7 8 9\n[UNK] 1 1 1\nmovie 0 0 1\n", encoding="utf-8")
    with pytest.warns(UserWarning) as caught:
        words, vectors = load_static_vectors(path)
    messages = " ".join(str(warning.message) for warning in caught)
    assert "1 duplicate word" in messages and "skipped 2 word(s)" in messages
    assert words == ["the", "movie"]
    assert vectors.tolist() == [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]


def test_normalize_and_forward_contract():
    config = StaticVectorsConfig(vocab_size=5, hidden_size=4, normalize=True)
    model = StaticVectorsModel(config).eval()
    assert torch.equal(model.embeddings.weight[0], torch.zeros(4))
    input_ids = torch.tensor([[1, 2, 0]])
    output = model(input_ids=input_ids, attention_mask=torch.tensor([[1, 1, 0]]), output_hidden_states=True)
    torch.testing.assert_close(output.last_hidden_state[0, :2].norm(dim=-1), torch.ones(2))
    assert torch.equal(output.last_hidden_state[0, 2], torch.zeros(4))
    assert len(output.hidden_states) == 1 and torch.equal(output.hidden_states[0], output.last_hidden_state)
    as_tuple = model(input_ids=input_ids, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    embeds = model.get_input_embeddings()(input_ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).last_hidden_state, output.last_hidden_state[:, :3])
    for bad in ({}, {"input_ids": input_ids, "inputs_embeds": embeds}):
        with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
            model(**bad)


def test_config_round_trips_every_field(tmp_path):
    fields = dict(
        vocab_size=7,
        hidden_size=5,
        pad_token_id=0,
        max_position_embeddings=1234,
        normalize=True,
        source_format="glove",
        initializer_range=0.5,
    )
    StaticVectorsConfig(**fields).save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert {name: getattr(reloaded, name) for name in fields} == fields
    assert reloaded.num_hidden_layers == 0
    with pytest.raises(ValueError, match="unknown source_format 'glvoe'"):
        StaticVectorsConfig(source_format="glvoe")


def test_fresh_model_is_random_and_saved_weights_survive_loading(tmp_path):
    model = StaticVectorsModel(StaticVectorsConfig(vocab_size=6, hidden_size=4))
    assert 0 < model.embeddings.weight[1:].std().item() < 0.1
    model.save_pretrained(tmp_path)
    assert torch.equal(AutoModel.from_pretrained(tmp_path).embeddings.weight, model.embeddings.weight)


def test_tokenizer_builder_rejects_clashing_words():
    with pytest.raises(ValueError, match="distinct"):
        build_static_vectors_tokenizer(["the", "the"])


def bad_rows(tmp_path, text, name="vectors.vec"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text, name, format, message",
    [
        (
            "3 3\nthe 1 2 3\nmovie 1 2\ngood 1 2 3\n",
            "vectors.vec",
            "auto",
            r"vectors.vec line 3 \(record 2\): expected 3 numbers after the word 'movie', found 2; every row must "
            r"have the dimension given in the header",
        ),
        (
            "3 3\nthe 1 2 3\nmovie 1 2 3 4\ngood 1 2 3\n",
            "vectors.vec",
            "auto",
            r"line 3 \(record 2\): expected 3 numbers.*found 4",
        ),
        (
            "3 3\nthe 1 2 3\nmovie 1 x 3\ngood 1 2 3\n",
            "vectors.vec",
            "auto",
            r"line 3 \(record 2\): value 'x' \(number 2 after",
        ),
        (
            "2 3\nthe 1 2 3\nmovie 1 nan 3\n",
            "vectors.vec",
            "auto",
            r"line 3 \(record 2\): value nan \(number 2 .*not finite",
        ),
        (
            "2 3\nthe 1 2 3\nmovie 1 2 1e39\n",
            "vectors.vec",
            "auto",
            r"line 3 \(record 2\): value 1e39 \(number 3 .*beyond the float32 range",
        ),
        ("5 3\nthe 1 2 3\nmovie 1 2 3\n", "vectors.vec", "auto", r"header \(line 1\) says 5 words but .* 2 rows"),
        (
            "1 3\nthe 1 2 3\nmovie 1 2 3\n",
            "vectors.vec",
            "auto",
            r"vectors.vec line 3 \(record 2\): the header says 1 words",
        ),
        (
            "the 1 2 3\nmovie 1 2\n",
            "glove.txt",
            "auto",
            r"glove.txt line 2 \(record 2\): expected 3 numbers .*first row \(3\)",
        ),
        ("2 3\nthe 1 2 3\nmovie 1 2 3\n", "glove.txt", "glove", r"line 1 \(record 1\): looks like a word2vec header"),
        ("the 1 2 3\n", "vectors.txt", "word2vec-text", r"line 1: expected a header 'count dim'"),
        ("", "glove.txt", "auto", r"glove.txt: no vectors found"),
    ],
)
def test_bad_text_files_name_the_line(tmp_path, text, name, format, message):
    with pytest.raises(ValueError, match=message):
        load_static_vectors(bad_rows(tmp_path, text, name), format=format)


def test_unknown_format_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown format 'w2v'; choose one of: auto, word2vec-text"):
        load_static_vectors(WRITERS["glove"](tmp_path), format="w2v")


def test_bad_binary_files_name_the_record(tmp_path):
    rows = list(VECTORS.items())
    path = write_binary(tmp_path / "vectors.bin", rows)
    data = path.read_bytes()
    path.write_bytes(data[:-6])
    with pytest.raises(ValueError, match=r"vectors.bin record 4: expected 12 bytes .*'good'.*truncated"):
        load_static_vectors(path)
    write_binary(path, rows, count=6)
    with pytest.raises(ValueError, match=r"vectors.bin record 5: the file ends before this word"):
        load_static_vectors(path)
    write_binary(path, rows, count=3)
    with pytest.raises(ValueError, match=r"more data follows record 3"):
        load_static_vectors(path)
    write_binary(path, [("the", [1.0, float("inf"), 0.0])])
    with pytest.raises(ValueError, match=r"record 1: value inf \(number 2 of the word 'the'\) is not finite"):
        load_static_vectors(path)
    path.write_bytes(b"\xba\x16O/\x00\x00\x00\x00")  # a fastText .bin model starts with a magic number
    with pytest.raises(ValueError, match="fastText .bin model files are not supported"):
        load_static_vectors(path)


def test_gensim_fasttext_file_matches_gensim(tmp_path):
    pytest.importorskip("gensim")
    from gensim.models import KeyedVectors
    from gensim.test.utils import datapath

    path = datapath("pang_lee_polarity_fasttext.vec")
    # The file holds a cp1252 byte (line 150 is the word b'\x97'), which both readers must be told to replace.
    with pytest.raises(
        ValueError, match=r"line 150 \(record 149\): bytes b'\\x97' are not UTF-8.*unicode_errors='replace'"
    ):
        load_static_vectors(path)
    expected = KeyedVectors.load_word2vec_format(path, binary=False, unicode_errors="replace")
    words, vectors = load_static_vectors(path, unicode_errors="replace")
    assert words == expected.index_to_key
    assert torch.equal(vectors, torch.tensor(expected.vectors))

    folder = convert_static_vectors(path, tmp_path / "backbone", unicode_errors="replace")
    model = AutoModel.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    sample = [words[index] for index in (0, 1, 17, 149, len(words) - 1)]
    batch = tokenizer([sample], is_split_into_words=True, return_tensors="pt")
    assert batch.word_ids(0) == list(range(len(sample)))
    states = model(**batch).last_hidden_state[0]  # (words, 100)
    assert torch.equal(states, torch.tensor(expected[sample]))
