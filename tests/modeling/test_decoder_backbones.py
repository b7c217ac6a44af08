"""Decoder models (Qwen2/Qwen3, Llama, Mistral, GPT-2) and ModernBERT as backbones: their family records, the
decoder embedding recipe (EOS appended, last-token pooling under left and right padding, prompts left out of every
pooling and of unit alignment), word alignment and causality at unit level, and LoRA on their records' targets."""

import pytest
import torch
from peft import get_peft_model
from transformers import AutoModel

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.integrations.peft import lora_config, lora_target_modules
from hf_metaembed.modeling.backbone_families import backbone_family
from hf_metaembed.modeling.tokenization_metaembed import PROMPT_TOKEN
from hf_metaembed.testing import make_tiny_bert, tiny_builders_for

TEXTS = ["the movie was not very good", "great film", "i love it"]
PROMPT = {"query": "the story of a film", "empty": ""}
DECODERS = ("qwen2", "qwen3", "llama", "mistral", "gpt2")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("decoders")
    made = {"bert": make_tiny_bert(root / "bert")}
    for family in (*DECODERS, "modernbert"):
        (name, build), *_ = tiny_builders_for(family).items()
        model, tokenizer = build(seed=1)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        made[name] = str(root / name)
    return made


@pytest.fixture(scope="module")
def qwen(folders) -> AutoModel:
    return AutoModel.from_pretrained(folders["qwen3"]).eval()


def left_padded(batch) -> dict:
    """The processor's right-padded batch with every row's padding moved to its left."""
    moved = dict(batch)
    lengths = batch["attention_mask"].sum(dim=-1, keepdim=True)  # (segments, backbones, 1)
    width = batch["input_ids"].shape[-1]
    positions = torch.arange(width)
    source = (positions - (width - lengths)) % width  # column read into each column
    for key in ("input_ids", "attention_mask", "token_unit_index"):
        moved[key] = batch[key].gather(-1, source)
    assert (moved["attention_mask"][..., -1] == 1).all() and (moved["attention_mask"][..., 0] == 0).any()
    return moved


def own_states(qwen, processor, text: str, prompt_name=None) -> tuple[torch.Tensor, list[int]]:
    """The decoder run alone on one unpadded text: `(tokens, dim)` states and each token's unit index."""
    segment = processor.encode_segment([text], prompt_name=prompt_name)
    ids = torch.tensor([segment["input_ids"][0]])
    with torch.no_grad():
        return qwen(input_ids=ids).last_hidden_state[0], segment["token_unit_index"][0]


def test_decoder_records_are_registered_with_their_recipe():
    for family in DECODERS:
        record = backbone_family(family)
        assert record.name == family and record.causal and record.append_eos and record.unit_type == "word"
    assert backbone_family("qwen3").lora_targets == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert not backbone_family("modernbert").causal and backbone_family("modernbert").lora_targets == ("Wqkv", "Wo")


@pytest.mark.parametrize("family", [*DECODERS, "modernbert"])
def test_every_family_aligns_words_runs_and_takes_lora(family, folders):
    processor = MetaEmbedProcessor.from_backbones([folders[family]])
    tokenizer = processor.tokenizers[0]
    batch = processor(TEXTS)
    ids, units = batch["input_ids"][0, 0], batch["token_unit_index"][0, 0]
    real = batch["attention_mask"][0, 0].bool()
    if family != "modernbert":  # decoders end with EOS, which belongs to no unit
        assert ids[real][-1] == tokenizer.eos_token_id and units[real][-1] == -1
    assert units[real].max() == len(TEXTS[0].split()) - 1
    model = MetaEmbedModel.from_backbones([folders[family]], fusion="concat").eval()
    peft_model = get_peft_model(model, lora_config(model, r=2))
    adapted = [name for name, _ in peft_model.named_modules() if name.endswith("lora_A")]
    assert adapted and all("backbone_0" in name for name in adapted)
    with torch.no_grad():
        states = peft_model(**batch).last_hidden_state
    assert states.shape == (3, len(TEXTS[0].split()), 16) and torch.isfinite(states).all()


@pytest.mark.parametrize("level", ["unit", "sequence"])
def test_qwen3_fuses_with_bert(level, folders):
    backbones = [folders["qwen3"], folders["bert"]]
    model = MetaEmbedModel.from_backbones(backbones, fusion="dme", level=level).eval()
    processor = MetaEmbedProcessor.from_backbones(backbones)
    with torch.no_grad():
        out = model(**processor(TEXTS))
    assert out.pooler_output.shape == (3, 16) and torch.isfinite(out.pooler_output).all()
    weights = out.fusion_weights
    assert weights.shape[-1] == 2 and torch.allclose(weights.sum(-1)[weights.sum(-1) > 0], torch.tensor(1.0))
    if level == "sequence":  # the decoder's recipe by default: its last token; BERT's: the mean
        assert model.config.backbones[0]["sentence_pooling"] == {"mode": "lasttoken", "normalize": False}
        assert model.config.backbones[1]["sentence_pooling"] is None


@pytest.mark.parametrize("padding", ["right", "left"])
def test_last_token_pooling_gives_the_decoders_own_last_token_state(padding, folders, qwen):
    model = MetaEmbedModel.from_backbones(
        [folders["qwen3"]], fusion="concat", level="sequence", pooling="last_token"
    ).eval()
    processor = MetaEmbedProcessor.from_backbones([folders["qwen3"]])
    batch = processor(TEXTS)
    batch = left_padded(batch) if padding == "left" else batch
    with torch.no_grad():
        pooled = model(**batch).pooler_output
    for row, text in enumerate(TEXTS):
        states, _ = own_states(qwen, processor, text)
        torch.testing.assert_close(pooled[row], states[-1], rtol=0, atol=1e-5)


def test_unit_states_are_the_same_under_left_and_right_padding(folders):
    model = MetaEmbedModel.from_backbones([folders["qwen3"]], fusion="concat").eval()
    processor = MetaEmbedProcessor.from_backbones([folders["qwen3"]])
    batch = processor(TEXTS)
    with torch.no_grad():
        right = model(**batch).last_hidden_state
        left = model(**left_padded(batch)).last_hidden_state
    torch.testing.assert_close(left, right, rtol=0, atol=1e-5)


def test_a_unit_sees_only_its_left_context(folders):
    model = MetaEmbedModel.from_backbones([folders["qwen3"]], fusion="concat").eval()
    processor = MetaEmbedProcessor.from_backbones([folders["qwen3"]])
    with torch.no_grad():
        states = model(**processor(["the movie was good", "the movie was bad"])).last_hidden_state
    torch.testing.assert_close(states[0, :3], states[1, :3], rtol=0, atol=1e-6)  # "the movie was" alike
    assert not torch.allclose(states[0, 3], states[1, 3])


@pytest.mark.parametrize("pooling", ["mean", "last_token"])
def test_prompt_tokens_are_read_but_never_pooled(pooling, folders, qwen):
    processor = MetaEmbedProcessor.from_backbones([folders["qwen3"]], prompts=[PROMPT])
    model = MetaEmbedModel.from_backbones([folders["qwen3"]], fusion="concat", level="sequence", pooling=pooling)
    batch = processor(TEXTS, prompt_name="query")
    prompt_ids = processor.tokenizers[0]("the story of a film", add_special_tokens=False)["input_ids"]
    units = batch["token_unit_index"][0, 0]
    assert units[: len(prompt_ids)].tolist() == [PROMPT_TOKEN] * len(prompt_ids)
    assert batch["input_ids"][0, 0, : len(prompt_ids)].tolist() == prompt_ids
    with torch.no_grad():
        pooled = model.eval()(**left_padded(batch)).pooler_output
        plain = model(**processor(TEXTS)).pooler_output
    for row, text in enumerate(TEXTS):
        states, token_units = own_states(qwen, processor, text, prompt_name="query")
        kept = torch.tensor(token_units) != PROMPT_TOKEN  # words and EOS
        expected = states[kept].mean(dim=0) if pooling == "mean" else states[-1]
        torch.testing.assert_close(pooled[row], expected, rtol=0, atol=1e-5)
    assert not torch.allclose(pooled, plain)  # the prompt was read: the words' states know it


def test_prompt_tokens_belong_to_no_unit(folders):
    processor = MetaEmbedProcessor.from_backbones([folders["qwen3"], folders["bert"]], prompts=[PROMPT, None])
    model = MetaEmbedModel.from_backbones([folders["qwen3"], folders["bert"]], fusion="concat").eval()
    with_prompt = processor(TEXTS, prompt_name="query")
    assert with_prompt["unit_mask"].equal(processor(TEXTS)["unit_mask"])
    assert (with_prompt["token_unit_index"][:, 1] != PROMPT_TOKEN).all()  # BERT has no prompt of that name
    special = model.config.pool_special_tokens
    model.config.pool_special_tokens = True  # even as special units, a prompt is no unit
    try:
        with torch.no_grad():
            states = model(**with_prompt).last_hidden_state
    finally:
        model.config.pool_special_tokens = special
    assert states.shape[1] == with_prompt["unit_mask"].shape[1] + 2  # one special unit before, one after


def test_prompts_save_reload_and_unknown_names_fail(folders, tmp_path):
    processor = MetaEmbedProcessor.from_backbones([folders["qwen3"]], prompts=[PROMPT], prompt_name="query")
    processor.save_pretrained(tmp_path / "processor")
    reloaded = MetaEmbedProcessor.from_pretrained(tmp_path / "processor")
    assert reloaded.prompts == [PROMPT] and reloaded.prompt_name == "query"
    assert reloaded(TEXTS)["input_ids"].equal(processor(TEXTS)["input_ids"])
    assert processor(TEXTS, prompt_name="empty")["input_ids"].shape[-1] < processor(TEXTS)["input_ids"].shape[-1]
    with pytest.raises(ValueError, match="unknown prompt_name 'pasage'.*prompts: empty, query"):
        processor(TEXTS, prompt_name="pasage")


def test_lora_targets_of_the_records_are_found(folders):
    model = MetaEmbedModel.from_backbones([folders["qwen3"], folders["bert"]], fusion="dme")
    targets = lora_target_modules(model).target_modules
    assert "q_proj|k_proj|v_proj|o_proj" in targets and "query|value" in targets
