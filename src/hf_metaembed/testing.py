"""Tiny random-weight backbones with their own tiny tokenizers, for tests, examples and benchmarks.

Every ``build_tiny_*(seed, max_length)`` returns ``(model, tokenizer)`` in memory for one kind of
backbone (BERT, RoBERTa, ESM-2, ProtT5, Ankh, static word vectors): random but seeded weights (eval
mode), and a tokenizer that behaves like the real one. Every ``make_tiny_*(folder, seed, max_length)``
builds the same and writes both with ``save_pretrained`` into ``folder``, returning it as ``str``.
Tests load them through the ordinary ``from_pretrained`` paths (``AutoConfig``, ``AutoTokenizer``,
``AutoModel`` or ``T5EncoderModel``) with ``HF_HUB_OFFLINE=1``. Nothing here downloads anything.

Which builders exist is read off the backbone family records (``BackboneFamily.tiny_builders`` in
``hf_metaembed.modeling.backbone_families``): ``tiny_builders_for(family)`` resolves one family's builders,
``tiny_backbone_builders()`` every registered family's, so a family registered with a tiny builder
is built by ``make_all_tiny_backbones`` (and tested) the day it is registered.

Calling conventions of the saved tokenizers (mirroring the real checkpoints):

- BERT: WordPiece, lowercasing; ``tok(text)`` or ``tok(words, is_split_into_words=True)``;
  ``[CLS] pieces... [SEP]``; every lowercase ASCII word splits into known pieces (no ``[UNK]``).
- RoBERTa: byte-level BPE saved with ``add_prefix_space=True``; ``tok(text)`` or
  ``tok(words, is_split_into_words=True)``; ``<s> pieces... </s>``; any text tokenizes.
- ESM-2: ``EsmTokenizer`` with the real 33-token ESM-2 vocabulary; ``tok("MKTA")`` gives
  ``<cls> M K T A <eos>``.
- ProtT5: ``T5Tokenizer`` (Unigram) with pieces ``▁A``...; residues separated by spaces,
  ``tok("M K T A")`` (or ``tok(list("MKTA"), is_split_into_words=True)``) gives
  ``▁M ▁K ▁T ▁A </s>``; U/Z/O/B must be mapped to X by the caller (else ``<unk>``).
- Ankh: a plain ``tokenizers`` WordLevel tokenizer (reloads as ``TokenizersBackend``), one token per
  character; ``tok(list("MKTA"), is_split_into_words=True)`` (or ``tok("MKTA")``) gives
  ``M K T A </s>``.
- ModernBERT: byte-level BPE (prefix space), ``[CLS] pieces... [SEP]``; any text tokenizes.
- Decoders (Qwen2, Qwen3, Llama, Mistral, GPT-2; read through ``AutoModel``, no LM head): byte-level BPE with a
  prefix space, as their real tokenizers; Llama and Mistral put ``<s>`` first, Qwen and GPT-2 add no special token
  (the processor appends EOS, as decoder embedders read). Qwen pads with ``<|endoftext|>``; Llama, Mistral and GPT-2
  have no pad token, as the real ones.
- Static word vectors: a ``StaticVectorsModel`` table and the whitespace word-level tokenizer
  ``convert_static_vectors`` writes (lowercasing; no special tokens; unknown words are ``[UNK]``).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModel,
    BertConfig,
    BertModel,
    BertTokenizer,
    EsmConfig,
    EsmModel,
    EsmTokenizer,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    ModernBertConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2Tokenizer,
    Qwen3Config,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from .io.static_vectors import build_static_vectors_tokenizer
from .modeling.backbone_families import BackboneFamily, backbone_families, backbone_family
from .modeling.static_vectors import StaticVectorsConfig, StaticVectorsModel

__all__ = [
    "ANKH_RESIDUES",
    "BERT_WORDS",
    "ESM2_VOCAB",
    "PROTT5_RESIDUES",
    "TINY_BUILDERS",
    "build_tiny_ankh",
    "build_tiny_bert",
    "build_tiny_esm",
    "build_tiny_gpt2",
    "build_tiny_llama",
    "build_tiny_mistral",
    "build_tiny_modernbert",
    "build_tiny_qwen2",
    "build_tiny_qwen3",
    "build_tiny_prott5",
    "build_tiny_roberta",
    "build_tiny_static_vectors",
    "make_all_tiny_backbones",
    "make_tiny_ankh",
    "make_tiny_bert",
    "make_tiny_esm",
    "make_tiny_gpt2",
    "make_tiny_llama",
    "make_tiny_mistral",
    "make_tiny_modernbert",
    "make_tiny_qwen2",
    "make_tiny_qwen3",
    "make_tiny_remote_code_backbone",
    "make_tiny_prott5",
    "make_tiny_roberta",
    "make_tiny_static_vectors",
    "tiny_backbone_builders",
    "tiny_builders_for",
]

# Shared tiny sizes: hidden 16, 2 layers, 2 heads of 8, feed-forward 32.
HIDDEN = 16
LAYERS = 2
HEADS = 2
FFN = 32
# the shape of every tiny BERT-style encoder (BERT, RoBERTa, ESM), in their configs' field names
_ENCODER_SHAPE = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": FFN,
}

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
PUNCTUATION = list(".,!?'\"-:;()")
BERT_WORDS = [
    "the", "a", "an", "and", "or", "of", "to", "in", "it", "this", "that", "was", "is", "are", "be",
    "not", "no", "very", "so", "too", "movie", "film", "good", "bad", "great", "best", "worst", "fun",
    "boring", "plot", "actor", "story", "love", "hate", "i", "you", "we", "they", "he", "she",
]  # fmt: skip
BERT_SUFFIXES = ["##ing", "##ed", "##s", "##es", "##er", "##ly", "##est", "##ness", "##ment", "##ion"]

# Real ESM-2 vocabulary, in the real order (ids 0..32).
ESM2_VOCAB = [
    "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q",
    "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
]  # fmt: skip

# ProtT5 pieces after <pad> </s> <unk>, in ProtT5's frequency order; 20 standard residues + X.
PROTT5_RESIDUES = list("ALGVSREDTIPKFQNYMHWCX")
# Ankh pieces after <pad> </s> <unk>: 20 standard residues, X, then the rare U Z O B.
ANKH_RESIDUES = list("ALGVSREDTIPKFQNYMHWCX") + list("UZOB")


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch for the block without disturbing the caller's global CPU RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _save(folder: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """Write model and tokenizer with ``save_pretrained`` into ``folder`` (created if needed)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# --------------------------------------------------------------------------------------------- BERT


def _bert_vocab() -> list[str]:
    """A small WordPiece vocabulary that covers every lowercase ASCII word, digit and basic punctuation."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += PUNCTUATION + list(DIGITS) + list(LETTERS)
    tokens += [f"##{c}" for c in LETTERS + DIGITS] + BERT_SUFFIXES
    tokens += [w for w in BERT_WORDS if w not in tokens]
    return tokens


def build_tiny_bert(seed: int = 0, max_length: int = 64) -> tuple[BertModel, BertTokenizer]:
    """A tiny ``BertModel`` (with pooler, eval mode) and a lowercasing WordPiece ``BertTokenizer``.

    ``max_position_embeddings`` and ``tokenizer.model_max_length`` both equal ``max_length``
    (``[CLS]`` and ``[SEP]`` included), as for ``bert-base-uncased`` with 512.
    """
    vocab = {tok: i for i, tok in enumerate(_bert_vocab())}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=max_length)
    config = BertConfig(
        vocab_size=len(vocab),
        **_ENCODER_SHAPE,
        max_position_embeddings=max_length,
        type_vocab_size=2,
        pad_token_id=vocab["[PAD]"],
    )
    with _seeded(seed):
        model = BertModel(config).eval()
    return model, tokenizer


def make_tiny_bert(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_bert` to ``folder``; reload with ``AutoModel`` / ``AutoTokenizer``."""
    return _save(folder, *build_tiny_bert(seed, max_length))


# ------------------------------------------------------------------------------------------ RoBERTa


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _roberta_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE: all 256 byte symbols plus left-to-right merges spelling ``Ġword`` for a few words."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>"]
    tokens += [_bytes_to_unicode()[b] for b in range(256)]
    merges: list[tuple[str, str]] = []
    for word in BERT_WORDS:
        current = "Ġ"
        for char in word:
            merged = current + char
            if merged not in tokens:
                merges.append((current, char))
                tokens.append(merged)
            current = merged
    tokens.append("<mask>")
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_tiny_roberta(seed: int = 0, max_length: int = 64) -> tuple[RobertaModel, RobertaTokenizer]:
    """A tiny ``RobertaModel`` (with pooler, eval mode) and a byte-level BPE ``RobertaTokenizer``.

    The tokenizer is saved with ``add_prefix_space=True`` so ``is_split_into_words=True`` works
    without extra arguments. As in real RoBERTa, position ids start at ``pad_token_id + 1 = 2``, so
    ``max_position_embeddings = max_length + 2`` and ``tokenizer.model_max_length = max_length``.
    """
    vocab, merges = _roberta_vocab_and_merges()
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=True, model_max_length=max_length)
    config = RobertaConfig(
        vocab_size=len(vocab),
        **_ENCODER_SHAPE,
        max_position_embeddings=max_length + 2,
        type_vocab_size=1,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )
    with _seeded(seed):
        model = RobertaModel(config).eval()
    return model, tokenizer


def make_tiny_roberta(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_roberta` to ``folder``; reload with ``AutoModel`` / ``AutoTokenizer``."""
    return _save(folder, *build_tiny_roberta(seed, max_length))


# ----------------------------------------------------------------------------------------------- ESM


def build_tiny_esm(seed: int = 0, max_length: int = 64, **shape) -> tuple[EsmModel, EsmTokenizer]:
    """A tiny ESM-2-style ``EsmModel`` (no pooler, eval mode) and an ``EsmTokenizer`` with the real ESM-2 vocab.

    ``shape`` overrides config fields, e.g. the ESM-2-8M shape for benchmarks: ``num_hidden_layers=6,
    hidden_size=320, num_attention_heads=20, intermediate_size=1280`` (random weights all the same).

    ``tokenizer("MKTA")`` gives ``<cls> M K T A <eos>``. ``max_position_embeddings`` and
    ``tokenizer.model_max_length`` are ``max_length + 2``, so at most ``max_length`` residues fit.
    Note: ``AutoModel.from_pretrained`` builds ``EsmModel`` with a pooler, which is then newly
    (randomly) initialised, exactly as with the real ESM-2 checkpoints; ``last_hidden_state`` matches.
    """
    with tempfile.TemporaryDirectory() as tmp:  # EsmTokenizer reads its vocab from a file, then keeps it in memory
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(ESM2_VOCAB) + "\n", encoding="utf-8")
        tokenizer = EsmTokenizer(vocab_file=str(vocab_file), model_max_length=max_length + 2)
    config = EsmConfig(
        vocab_size=len(ESM2_VOCAB),
        **_ENCODER_SHAPE,
        max_position_embeddings=max_length + 2,
        pad_token_id=ESM2_VOCAB.index("<pad>"),
        mask_token_id=ESM2_VOCAB.index("<mask>"),
        position_embedding_type="rotary",
        emb_layer_norm_before=False,
        token_dropout=True,
    )
    for field, value in shape.items():
        setattr(config, field, value)
    with _seeded(seed):
        model = EsmModel(config, add_pooling_layer=False).eval()
    return model, tokenizer


def make_tiny_esm(folder: str | Path, seed: int = 0, max_length: int = 64, **shape) -> str:
    """Save :func:`build_tiny_esm` to ``folder``; reload with ``AutoModel`` / ``AutoTokenizer``."""
    return _save(folder, *build_tiny_esm(seed, max_length, **shape))


# ------------------------------------------------------------------------------------ T5 (ProtT5/Ankh)


def _tiny_t5_config(vocab_size: int, feed_forward_proj: str) -> T5Config:
    return T5Config(
        vocab_size=vocab_size,
        d_model=HIDDEN,
        d_kv=HIDDEN // HEADS,
        d_ff=FFN,
        num_layers=LAYERS,
        num_decoder_layers=LAYERS,
        num_heads=HEADS,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj=feed_forward_proj,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        use_cache=False,
    )


def build_tiny_prott5(seed: int = 0, max_length: int = 64) -> tuple[T5EncoderModel, T5Tokenizer]:
    """A tiny ProtT5-style ``T5EncoderModel`` (eval mode) and a Unigram ``T5Tokenizer`` (pieces ``▁A``, ``▁L``...).

    Residues are passed space-separated: ``tokenizer("M K T A")`` gives ``▁M ▁K ▁T ▁A </s>``. Only the
    20 standard residues and X have pieces (map U/Z/O/B to X first, as ProtT5's model card says);
    anything else becomes ``<unk>``. No sentinel ``<extra_id_*>`` tokens. T5 uses relative positions,
    so the residue limit lives only in ``tokenizer.model_max_length = max_length + 1`` (room for ``</s>``).
    """
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"▁{aa}", -1.0 - 0.01 * i) for i, aa in enumerate(PROTT5_RESIDUES)]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length + 1)
    config = _tiny_t5_config(len(pieces), feed_forward_proj="relu")
    with _seeded(seed):
        model = T5EncoderModel(config).eval()
    return model, tokenizer


def make_tiny_prott5(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_prott5` to ``folder``; reload with ``T5EncoderModel`` / ``AutoTokenizer``."""
    return _save(folder, *build_tiny_prott5(seed, max_length))


def _ankh_tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    """Per-character WordLevel tokenizer: whitespace is dropped, each remaining character is one token."""
    vocab = {tok: i for i, tok in enumerate(["<pad>", "</s>", "<unk>", *ANKH_RESIDUES])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length + 1,
    )


def build_tiny_ankh(seed: int = 0, max_length: int = 64) -> tuple[T5EncoderModel, PreTrainedTokenizerFast]:
    """A tiny Ankh-style ``T5EncoderModel`` (gated-GELU, eval mode) and a per-character tokenizer.

    ``tokenizer(list("MKTA"), is_split_into_words=True)`` (Ankh's documented call) and
    ``tokenizer("MKTA")`` both give ``M K T A </s>``. Pieces: 20 standard residues, X, U, Z, O, B
    (no ``▁`` prefix); other characters become ``<unk>``. ``tokenizer.model_max_length = max_length + 1``.
    Reloads through ``AutoTokenizer`` as the generic fast-tokenizer class (``TokenizersBackend``).
    """
    tokenizer = _ankh_tokenizer(max_length)
    config = _tiny_t5_config(len(tokenizer), feed_forward_proj="gated-gelu")
    with _seeded(seed):
        model = T5EncoderModel(config).eval()
    return model, tokenizer


def make_tiny_ankh(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_ankh` to ``folder``; reload with ``T5EncoderModel`` / ``AutoTokenizer``."""
    return _save(folder, *build_tiny_ankh(seed, max_length))


# ------------------------------------------------------------------------------------ static vectors


def build_tiny_static_vectors(
    seed: int = 0, max_length: int = 64
) -> tuple[StaticVectorsModel, PreTrainedTokenizerFast]:
    """A tiny static word-vector table (``StaticVectorsModel``, eval mode) and its word-level tokenizer.

    One row per word of ``BERT_WORDS``, letter, digit and punctuation mark, after ``[PAD]`` (row 0, zero) and
    ``[UNK]`` (row 1); ``tokenizer.model_max_length = max_length`` (a table itself has no length limit).
    """
    words = list(dict.fromkeys(BERT_WORDS + list(LETTERS) + list(DIGITS) + PUNCTUATION))
    tokenizer = build_static_vectors_tokenizer(words, lowercase=True, max_length=max_length)
    config = StaticVectorsConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN)
    with _seeded(seed):
        model = StaticVectorsModel(config).eval()
    return model, tokenizer


def make_tiny_static_vectors(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_static_vectors` to ``folder``; reload with ``AutoModel`` / ``AutoTokenizer``."""
    return _save(folder, *build_tiny_static_vectors(seed, max_length))


# ------------------------------------------------------------------------- ModernBERT and decoder backbones


def _byte_level_tokenizer(
    specials: list[str], max_length: int, frame: tuple[list[str], list[str]] = ([], []), **roles: str
) -> PreTrainedTokenizerFast:
    """A byte-level BPE fast tokenizer (GPT-2's byte alphabet, merges spelling ``Ġword`` for ``BERT_WORDS``) with a
    prefix space, so pre-split words tokenize as in running text; ``frame`` = special tokens put before and after a
    sequence; ``roles`` name the special tokens (``eos_token="<|endoftext|>"``)."""
    vocab, merges = _roberta_vocab_and_merges()
    vocab = {token: index for index, token in enumerate([*specials, *(t for t in vocab if not t.startswith("<"))])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    before, after = frame
    if before or after:
        single = " ".join([*before, "$A", *after])
        pair = " ".join([*before, "$A", *after, "$B", *after])
        used = dict.fromkeys([*before, *after])
        backend.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(token, vocab[token]) for token in used]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=max_length, add_prefix_space=True, **roles
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in roles.values()]})
    return tokenizer


def build_tiny_modernbert(seed: int = 0, max_length: int = 64) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny ``ModernBertModel`` (rotary positions, local and global attention layers, eval mode) and a byte-level
    BPE tokenizer framing a sequence as ``[CLS] ... [SEP]``; ``max_position_embeddings = model_max_length =
    max_length``."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = _byte_level_tokenizer(
        specials,
        max_length,
        (["[CLS]"], ["[SEP]"]),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        **_ENCODER_SHAPE,
        max_position_embeddings=max_length,
        local_attention=8,  # the second layer is global, the first sees 4 tokens each side
        pad_token_id=ids["[PAD]"],
        bos_token_id=ids["[CLS]"],
        cls_token_id=ids["[CLS]"],
        eos_token_id=ids["[SEP]"],
        sep_token_id=ids["[SEP]"],
    )
    with _seeded(seed):
        model = AutoModel.from_config(config).eval()
    return model, tokenizer


# config class, its shape fields, and the special tokens of each decoder family's tokenizer
_DECODERS = {
    "qwen2": (Qwen2Config, {"<|endoftext|>": "eos_token", "<|im_start|>": None, "<|im_end|>": None}, True),
    "qwen3": (Qwen3Config, {"<|endoftext|>": "eos_token", "<|im_start|>": None, "<|im_end|>": None}, True),
    "llama": (LlamaConfig, {"<unk>": "unk_token", "<s>": "bos_token", "</s>": "eos_token"}, False),
    "mistral": (MistralConfig, {"<unk>": "unk_token", "<s>": "bos_token", "</s>": "eos_token"}, False),
    "gpt2": (GPT2Config, {"<|endoftext|>": "eos_token"}, False),
}


def _build_tiny_decoder(family: str, seed: int, max_length: int) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    config_class, specials, pads = _DECODERS[family]
    roles = {role: token for token, role in specials.items() if role is not None}
    if pads:
        roles["pad_token"] = roles["eos_token"]
    if family == "gpt2":
        roles.update(bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    frame = (["<s>"], []) if "bos_token" in roles and family in ("llama", "mistral") else ([], [])
    if family == "qwen2":  # AutoTokenizer reads a qwen2 folder with Qwen2Tokenizer (its own byte-level splitting)
        vocab, merges = _roberta_vocab_and_merges()
        vocab = {token: i for i, token in enumerate([*specials, *(t for t in vocab if not t.startswith("<"))])}
        tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=max_length, unk_token=None, **roles)
    else:
        tokenizer = _byte_level_tokenizer(list(specials), max_length, frame, **roles)
    token_ids = {
        f"{role.removesuffix('_token')}_token_id": tokenizer.convert_tokens_to_ids(token)
        for role, token in roles.items()
        if role in ("bos_token", "eos_token", "pad_token")
    }
    if family == "gpt2":
        shape = {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_inner": FFN, "n_positions": max_length}
    else:
        shape = {
            **_ENCODER_SHAPE,
            "num_key_value_heads": 1,  # grouped-query attention, as the real ones
            "head_dim": HIDDEN // HEADS,
            "max_position_embeddings": max_length,
            "tie_word_embeddings": True,
        }
    config = config_class(vocab_size=len(tokenizer), use_cache=False, **shape, **token_ids)
    with _seeded(seed):
        model = AutoModel.from_config(config).eval()
    return model, tokenizer


def build_tiny_qwen2(seed: int = 0, max_length: int = 64) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny ``Qwen2Model`` (the decoder without LM head, eval mode) and a Qwen-style byte-level tokenizer."""
    return _build_tiny_decoder("qwen2", seed, max_length)


def build_tiny_qwen3(seed: int = 0, max_length: int = 64) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny ``Qwen3Model`` (the decoder without LM head, eval mode; as Qwen3-Embedding) and a Qwen-style
    byte-level tokenizer (no special tokens added, ``<|endoftext|>`` is EOS and padding)."""
    return _build_tiny_decoder("qwen3", seed, max_length)


def build_tiny_llama(seed: int = 0, max_length: int = 64) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny ``LlamaModel`` (eval mode) and a byte-level tokenizer that puts ``<s>`` first, as Llama's."""
    return _build_tiny_decoder("llama", seed, max_length)


def build_tiny_mistral(seed: int = 0, max_length: int = 64) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny ``MistralModel`` (eval mode; as E5-Mistral) and a byte-level tokenizer that puts ``<s>`` first."""
    return _build_tiny_decoder("mistral", seed, max_length)


def build_tiny_gpt2(seed: int = 0, max_length: int = 64) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny ``GPT2Model`` (eval mode; as SGPT) and GPT-2's byte-level tokenizer shape (no pad token)."""
    return _build_tiny_decoder("gpt2", seed, max_length)


def make_tiny_modernbert(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_modernbert` to ``folder``; reload with ``AutoModel`` / ``AutoTokenizer``."""
    return _save(folder, *build_tiny_modernbert(seed, max_length))


def make_tiny_qwen3(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_qwen3` to ``folder``; reload with ``AutoModel`` / ``AutoTokenizer``."""
    return _save(folder, *build_tiny_qwen3(seed, max_length))


def make_tiny_qwen2(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_qwen2` to ``folder``."""
    return _save(folder, *build_tiny_qwen2(seed, max_length))


def make_tiny_llama(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_llama` to ``folder``."""
    return _save(folder, *build_tiny_llama(seed, max_length))


def make_tiny_mistral(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_mistral` to ``folder``."""
    return _save(folder, *build_tiny_mistral(seed, max_length))


def make_tiny_gpt2(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """Save :func:`build_tiny_gpt2` to ``folder``."""
    return _save(folder, *build_tiny_gpt2(seed, max_length))


# ------------------------------------------------------------------------ a backbone with its own code

REMOTE_CODE_MODULE = "modeling_tiny_remote"
_REMOTE_CODE = '''"""A tiny encoder that ships its own code (loaded with trust_remote_code): embeddings, tanh."""

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput


class TinyRemoteConfig(PreTrainedConfig):
    model_type = "tiny_remote"

    def __init__(self, vocab_size=64, hidden_size=16, num_hidden_layers=2, pad_token_id=0, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class TinyRemoteModel(PreTrainedModel):
    config_class = TinyRemoteConfig
    base_model_prefix = "tiny_remote"

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        size = config.hidden_size
        self.layers = nn.ModuleList(nn.Linear(size, size) for _ in range(config.num_hidden_layers))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=False, return_dict=True, **kwargs):
        states = self.embeddings(input_ids)
        hidden_states = [states]
        for layer in self.layers:
            states = torch.tanh(layer(states))
            hidden_states.append(states)
        every = tuple(hidden_states) if output_hidden_states else None
        return BaseModelOutput(last_hidden_state=states, hidden_states=every)
'''


def make_tiny_remote_code_backbone(folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    """A local backbone folder that ships its own modelling code (``modeling_tiny_remote.py``, ``auto_map`` in its
    ``config.json``, model type ``tiny_remote``) with random weights and the tiny BERT tokenizer: it loads only with
    ``trust_remote_code=True``. Built by importing the written code file (no transformers module cache is used)."""
    import importlib.util
    import json

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    code = path / f"{REMOTE_CODE_MODULE}.py"
    code.write_text(_REMOTE_CODE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"_tiny_remote_{abs(hash(str(path)))}", code)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, tokenizer = build_tiny_bert(seed, max_length)
    config = module.TinyRemoteConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS)
    with _seeded(seed):
        model = module.TinyRemoteModel(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    config_file = path / "config.json"
    stored = json.loads(config_file.read_text(encoding="utf-8"))
    stored["auto_map"] = {
        "AutoConfig": f"{REMOTE_CODE_MODULE}.TinyRemoteConfig",
        "AutoModel": f"{REMOTE_CODE_MODULE}.TinyRemoteModel",
    }
    stored.pop("architectures", None)
    config_file.write_text(json.dumps(stored, indent=2), encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------------------------- all

Builder = Callable[..., tuple[PreTrainedModel, PreTrainedTokenizerBase]]
Maker = Callable[..., str]


def _make_with(build: Builder, folder: str | Path, seed: int = 0, max_length: int = 64) -> str:
    return _save(folder, *build(seed, max_length))


def tiny_builders_for(family: BackboneFamily | str) -> dict[str, Builder]:
    """The tiny builders of one backbone family (its record, or a model type such as ``"t5"``), by short name:
    ``{"prott5": build_tiny_prott5, "ankh": build_tiny_ankh}`` for the T5 family.

    A record names its builders (functions of this module) or holds the functions themselves.
    """
    record = family if isinstance(family, BackboneFamily) else backbone_family(family)
    builders = {}
    for builder in record.tiny_builders:
        function = globals().get(builder) if isinstance(builder, str) else builder
        if not callable(function):
            raise ValueError(
                f"backbone family {record.name!r} names the tiny builder {builder!r}, which hf_metaembed.testing does "
                "not define; define it there, or put the function itself in the record's tiny_builders"
            )
        builders[function.__name__.removeprefix("build_tiny_")] = function
    return builders


def tiny_backbone_builders() -> dict[str, tuple[Builder, Maker]]:
    """Every registered family's tiny builders: short name -> (in-memory builder, on-disk maker)."""
    table = {}
    for record in backbone_families():
        for name, build in tiny_builders_for(record).items():
            if name in table:
                raise ValueError(f"two backbone families have a tiny builder named {name!r}; rename one")
            table[name] = (build, globals().get(f"make_tiny_{name}") or functools.partial(_make_with, build))
    return table


# short name -> (in-memory builder, on-disk maker) for the families registered when this module was imported
TINY_BUILDERS: dict[str, tuple[Builder, Maker]] = tiny_backbone_builders()


def make_all_tiny_backbones(root: str | Path, seed: int = 0, max_length: int = 64) -> dict[str, str]:
    """Build every registered family's tiny backbones into ``root/<name>`` and return ``{name: folder}``."""
    return {
        name: make(Path(root) / name, seed=seed, max_length=max_length)
        for name, (_, make) in tiny_backbone_builders().items()
    }
