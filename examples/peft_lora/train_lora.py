"""LoRA inside the backbones of a meta-embedding model: train, save the adapter, reload it onto a fresh base, merge.

Two text backbones (tiny random-weight BERT and RoBERTa look-alikes, written to a temporary folder: nothing is
downloaded) are fused per word with DME for a two-class sentiment toy task. `lora_config` puts LoRA adapters on
every backbone's attention `query`/`value` projections (or only on the backbones you choose) and trains fusion and
head in full (`modules_to_save`). Steps: train with `Trainer`, save the adapter (kilobytes, next to a base of
megabytes), load a fresh base with `from_pretrained`, attach the adapter, check it reproduces the trained outputs,
merge it into the weights and save a plain model.

Swap in real backbones, e.g. ["sentence-transformers/all-MiniLM-L6-v2", "FacebookAI/roberta-base"].

Run: python examples/peft_lora/train_lora.py [--backbones 0 1] [--rank 8] [--epochs 8]
"""

import argparse
import os
import random
import tempfile

import torch
from peft import PeftModel, get_peft_model
from transformers import Trainer, TrainingArguments

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.integrations.peft import lora_config
from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset
from hf_metaembed.testing import make_tiny_bert, make_tiny_roberta

os.environ.setdefault("HF_HUB_OFFLINE", "1")
POSITIVE = ["good", "great", "best", "fun", "love"]
NEGATIVE = ["bad", "worst", "boring", "hate"]
FILLER = ["the", "movie", "film", "plot", "story", "actor", "was", "is", "very", "so", "it", "this", "and", "of"]


def toy_reviews(count: int, seed: int) -> tuple[list[str], list[int]]:
    """Short reviews whose label is whether positive or negative words dominate."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(count):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words += rng.choices(POSITIVE if label else NEGATIVE, k=rng.randint(1, 3))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def folder_size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", type=int, nargs="*", default=None, help="indices that get adapters (all)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as folder:
        backbones = [make_tiny_bert(f"{folder}/bert"), make_tiny_roberta(f"{folder}/roberta")]
        model = MetaEmbedForSequenceClassification.from_backbones(backbones, fusion="dme", num_labels=2)
        model.save_pretrained(f"{folder}/base")  # the frozen starting point the adapter will be loaded onto
        processor = MetaEmbedProcessor.from_backbones(backbones)

        config = lora_config(model, r=args.rank, lora_alpha=2 * args.rank, backbones=args.backbones)
        print(f"LoRA targets (regex over module names): {config.target_modules}")
        print(f"trained in full beside LoRA: {sorted(config.modules_to_save)}")
        peft_model = get_peft_model(model, config)
        peft_model.print_trainable_parameters()

        train_texts, train_labels = toy_reviews(160, seed=0)
        dev_texts, dev_labels = toy_reviews(40, seed=1)
        trainer = Trainer(
            model=peft_model,
            args=TrainingArguments(
                output_dir=f"{folder}/run",
                num_train_epochs=args.epochs,
                per_device_train_batch_size=16,
                learning_rate=1e-2,
                save_strategy="no",
                report_to="none",
                use_cpu=True,
                disable_tqdm=True,
                seed=0,
            ),
            train_dataset=MetaEmbedDataset(processor, train_texts, labels=train_labels),
            data_collator=MetaEmbedDataCollator(processor),
        )
        trainer.train()

        dev_batch = processor(dev_texts)
        peft_model.eval()
        with torch.no_grad():
            trained = peft_model(**dev_batch).logits
        accuracy = (trained.argmax(-1) == torch.tensor(dev_labels)).float().mean().item()
        print(f"dev accuracy with LoRA: {accuracy:.2f}")

        peft_model.save_pretrained(f"{folder}/adapter")
        adapter_kb, base_kb = folder_size(f"{folder}/adapter") / 1e3, folder_size(f"{folder}/base") / 1e3
        print(f"adapter: {adapter_kb:.1f} kB; base: {base_kb:.1f} kB")

        base = MetaEmbedForSequenceClassification.from_pretrained(f"{folder}/base")
        reloaded = PeftModel.from_pretrained(base, f"{folder}/adapter").eval()
        with torch.no_grad():
            difference = (reloaded(**dev_batch).logits - trained).abs().max().item()
        print(f"reloaded adapter reproduces the trained logits: max difference {difference:.2e}")

        merged = reloaded.merge_and_unload()
        with torch.no_grad():
            difference = (merged(**dev_batch).logits - trained).abs().max().item()
        merged.save_pretrained(f"{folder}/merged")
        print(f"merged into a plain {type(merged).__name__}: max difference {difference:.2e}; saved to merged/")


if __name__ == "__main__":
    main()
