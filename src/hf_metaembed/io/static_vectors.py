"""Convert word2vec / GloVe / fastText vector files into `StaticVectorsModel` backbone folders (weights, config,
remote code and a word-level tokenizer), or load them as a tensor. Files are read by `vector_files`."""

import os

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from ..modeling.static_vectors import StaticVectorsConfig, StaticVectorsModel
from .vector_files import PAD_TOKEN, SPECIAL_TOKENS, UNK_TOKEN, detect_static_vectors_format, read_vector_table


def load_static_vectors(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    lowercase: bool = False,
    limit: int | None = None,
    unicode_errors: str = "strict",
) -> tuple[list[str], torch.Tensor]:
    """Read a word-vector file.

    Args:
        path: a word2vec/fastText text file (`.vec`, with a "count dim" header), a GloVe text file (no header), or
            a word2vec binary file; a `.gz` suffix is decompressed on the fly.
        format: `"auto"` (detected from the first bytes) or one of `STATIC_VECTOR_FORMATS`.
        lowercase: lowercase the words; when two words collide the first in the file is kept.
        limit: keep only the first `limit` distinct words (files are usually sorted by frequency).
        unicode_errors: how to decode bytes that are not UTF-8, as in `bytes.decode`: `"strict"` raises,
            `"replace"` or `"ignore"` keep reading (some published files hold a few such words).

    Returns:
        The words in file order and their vectors, a float32 tensor of shape (words, dim). Duplicate words (the
        first is kept) and words a whitespace tokenizer cannot produce are skipped with a warning.

    Raises:
        ValueError: naming the file, the 1-based line (or record, for binary files), the problem and the fix.
    """
    table, dim, _ = read_vector_table(
        path, format=format, lowercase=lowercase, limit=limit, unicode_errors=unicode_errors
    )
    return table.words, torch.frombuffer(table.values, dtype=torch.float32).view(len(table.words), dim).clone()


def build_static_vectors_tokenizer(
    words: list[str], *, lowercase: bool = False, max_length: int = 512
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer for a static table: `[PAD]` is id 0, `[UNK]` id 1, then `words` in order.

    Text is split on whitespace only, so each whitespace-free word is exactly one token; no special tokens are added
    around a sequence. Works with `is_split_into_words=True` (`word_ids()`) and `return_offsets_mapping=True`.
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    if len(vocab) != len(words) + len(SPECIAL_TOKENS):
        raise ValueError("words must be distinct and must not contain [PAD] or [UNK]")
    backend = Tokenizer(WordLevel(vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD_TOKEN, unk_token=UNK_TOKEN, model_max_length=max_length
    )


def convert_static_vectors(
    path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    format: str = "auto",
    lowercase: bool = False,
    limit: int | None = None,
    normalize: bool = False,
    max_length: int = 512,
    unicode_errors: str = "strict",
) -> str:
    """Convert a word-vector file into a backbone folder that `AutoModel`/`AutoTokenizer` load.

    The folder holds `config.json`, `model.safetensors` (a `StaticVectorsModel`), `static_vectors.py` (so it also
    loads with `trust_remote_code=True` where this library is not installed) and a word-level tokenizer. Row 0 is
    `[PAD]` (zero vector), row 1 `[UNK]` (the mean of all vectors), then the words in file order.

    Args:
        path, format, lowercase, limit, unicode_errors: as in `load_static_vectors`; with `lowercase=True` the
            tokenizer also lowercases its input.
        output_dir: folder to write (created if missing).
        normalize: L2-normalise vectors at lookup time (stored vectors stay as in the file).
        max_length: the tokenizer's `model_max_length`.

    Returns:
        `output_dir` as a string.
    """
    table, dim, source_format = read_vector_table(
        path, format=format, lowercase=lowercase, limit=limit, unicode_errors=unicode_errors
    )
    vectors = torch.frombuffer(table.values, dtype=torch.float32).view(len(table.words), dim)  # (words, dim)
    weight = torch.empty(len(table.words) + len(SPECIAL_TOKENS), dim)
    weight[0] = 0.0
    weight[1] = vectors.sum(dim=0, dtype=torch.float64).div(len(table.words)).float()
    weight[len(SPECIAL_TOKENS) :] = vectors

    config = StaticVectorsConfig(
        vocab_size=weight.shape[0],
        hidden_size=dim,
        pad_token_id=0,
        max_position_embeddings=max(max_length, StaticVectorsConfig.max_position_embeddings),
        normalize=normalize,
        source_format=source_format,
    )
    # Built on the meta device so the random initialisation of a possibly huge table is skipped.
    with torch.device("meta"):
        model = StaticVectorsModel(config)
    model.load_state_dict({"embeddings.weight": weight}, assign=True)
    output_dir = os.fspath(output_dir)
    model.save_pretrained(output_dir)
    tokenizer = build_static_vectors_tokenizer(table.words, lowercase=lowercase, max_length=max_length)
    tokenizer.save_pretrained(output_dir)
    return output_dir


__all__ = [
    "PAD_TOKEN",
    "UNK_TOKEN",
    "build_static_vectors_tokenizer",
    "convert_static_vectors",
    "detect_static_vectors_format",
    "load_static_vectors",
]
