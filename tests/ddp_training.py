"""A few `Trainer` steps of a MetaEmbed regressor on every process of a `torchrun`/`accelerate launch` job, for
tests/test_distributed_training.py (not collected by pytest itself).

    torchrun --nproc_per_node 2 tests/ddp_training.py MODE BACKBONE_DIR RESULT_DIR

MODE: `frozen` (token inputs, frozen backbones), `cached` (backbone states from a feature cache built by both
processes together), `lora` (LoRA adapters on the backbone), all through `Trainer` under DDP with
`ddp_find_unused_parameters=False`; or `fsdp`: the backbone's layers and the model sharded with torch's `fully_shard`
(FSDP2) in a plain training loop. (`Trainer(fsdp=...)` needs GPUs: accelerate turns FSDP on for GPU backends only.)
Every process writes RESULT_DIR/rank-N.json: how the job ran, its losses, and checksums of its trainable and frozen
weights before and after, so the test can check the processes trained the same model and left the backbones alone.
For `fsdp`, rank 0 also trains an unsharded copy on both processes' batches and reports the largest difference.
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.cache import CachedFeatureCollator, CachedFeatureDataset, build_feature_cache
from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset

RESIDUES = list("ACDEFGHIKLMNPQRSTVWY")


def _digest(tensors) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _checksums(model) -> dict:
    named = list(model.named_parameters())
    return {
        "trainable": _digest((n, p) for n, p in named if p.requires_grad),
        "frozen": _digest((n, p) for n, p in named if not p.requires_grad),
        "trainable_count": sum(p.numel() for _, p in named if p.requires_grad),
        "lora_count": sum(p.numel() for n, p in named if p.requires_grad and "lora_" in n),
    }


class _Losses:
    """Collects the loss of every logged step (`logging_steps=1`)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def __call__(self, logs: dict) -> None:
        if "loss" in logs:
            self.values.append(float(logs["loss"]))


def _regressor(backbone: str):
    torch.manual_seed(0)
    return MetaEmbedForSequenceClassification.from_backbones(
        [backbone], fusion="dme", num_labels=1, problem_type="regression"
    )


def _fsdp(backbone: str, processor, sequences: list[str], labels: list[float]) -> dict:
    """Three AdamW steps of the model sharded with `fully_shard`, each process on its own 4 samples."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = _regressor(backbone).eval()  # no dropout, so the unsharded copy below takes the very same steps
    before = _checksums(model)
    for layer in model.metaembed.backbone_0.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for step in range(3):
        rows = slice(4 * (world * step + rank), 4 * (world * step + rank + 1))
        loss = model(**processor(sequences[rows]), labels=torch.tensor(labels[rows])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    full = {name: p.full_tensor() for name, p in model.named_parameters()}  # gathered on every process
    result = {"world_size": world, "wrapped": type(model).__name__, "losses": losses, "before": before}
    result["after"] = _checksums(_Named(full, model))
    if rank == 0:  # the same steps unsharded, on the batches of both processes together
        reference = _regressor(backbone).eval()
        optimizer = torch.optim.AdamW([p for p in reference.parameters() if p.requires_grad], lr=5e-3)
        for step in range(3):
            rows = slice(4 * world * step, 4 * world * (step + 1))
            reference(**processor(sequences[rows]), labels=torch.tensor(labels[rows])).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        result["max_difference_to_unsharded"] = max(
            float((full[name] - p).abs().max()) for name, p in reference.named_parameters()
        )
    dist.destroy_process_group()
    return result


class _Named:
    """`named_parameters()` over gathered tensors, with the sharded model's `requires_grad` flags."""

    def __init__(self, tensors: dict, model) -> None:
        self.items = [(name, tensors[name].requires_grad_(p.requires_grad)) for name, p in model.named_parameters()]

    def named_parameters(self):
        return iter(self.items)


def main(mode: str, backbone: str, result_dir: str) -> None:
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(RESIDUES, int(rng.integers(5, 40)))) for _ in range(32)]
    labels = rng.normal(size=32).astype(np.float32).tolist()
    processor = MetaEmbedProcessor.from_backbones([backbone])
    if mode == "fsdp":
        result = _fsdp(backbone, processor, sequences, labels)
        result["rank"] = int(os.environ.get("RANK", 0))
        Path(result_dir, f"rank-{result['rank']}.json").write_text(json.dumps(result))
        return
    model = _regressor(backbone)
    if mode == "cached":
        folder = Path(result_dir) / "cache"
        cache = build_feature_cache(model, processor, folder, sequences=sequences, progress=False, distributed=True)
        dataset = CachedFeatureDataset(cache, sequences=sequences, labels=torch.tensor(labels))
        collator = CachedFeatureCollator()
    else:
        dataset = MetaEmbedDataset(processor, sequences, labels=labels)
        collator = MetaEmbedDataCollator(processor)
    if mode == "lora":
        from peft import get_peft_model

        from hf_metaembed.integrations.peft import lora_config

        model = get_peft_model(model, lora_config(model, r=4))
    before = _checksums(model)
    losses = _Losses()
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=4,
            max_steps=4,
            learning_rate=5e-3,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            remove_unused_columns=False,
            ddp_backend="gloo",
            # DDP's strict setting: every trainable parameter must receive a gradient at every step
            ddp_find_unused_parameters=False,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        trainer.log = lambda logs, *a, **k: losses(logs)
        trainer.train()
        wrapped = type(trainer.model_wrapped).__name__
    after = _checksums(trainer.model)
    result = {
        "rank": int(os.environ.get("RANK", 0)),
        "world_size": args.world_size,
        "parallel_mode": str(args.parallel_mode),
        "wrapped": wrapped,
        "losses": losses.values,
        "before": before,
        "after": after,
    }
    Path(result_dir, f"rank-{result['rank']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
