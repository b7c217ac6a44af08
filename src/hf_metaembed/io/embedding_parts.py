"""Embeddings computed out of input order, on their way into an `EmbeddingShardWriter` folder in input order.

`hf-metaembed embed` runs records longest first (token-budget batches) and, under a launcher, on several processes at
once. Each process writes what it computed as *parts* in `<output>/parts/`: safetensors files holding `positions
(records,)` (each record's position in the input), `embeddings (records, dim)` and, when kept, `fusion_weights (units,
backbones)` with `num_units (records,)`, plus the record ids in the metadata. A part is written atomically, so it is
whole or absent, and no two parts hold the same position. The main process assembles the parts in input order into
the writer's shards as soon as a whole block of records is covered, then deletes them; a rerun after a crash
(of any process) recomputes exactly the records no part or shard holds.

Not model code: the CLI uses it; the model files never import it.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch

from .embeddings import EmbeddingShardWriter
from .files import atomic_save_safetensors, remove_leftover_temporaries

PARTS_FOLDER = "parts"
_PART_PATTERN = "part-{:012d}.safetensors"


class EmbeddingParts:
    """The parts folder of an embedding run: which input positions are computed, writing and assembling them.

    Args:
        folder: the run's folder (the `EmbeddingShardWriter` folder); parts live in its `parts/` subfolder.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder) / PARTS_FOLDER
        self._positions: dict[str, np.ndarray] = {}  # part file name -> the input positions it holds

    def prepare(self, overwrite: bool = False) -> None:
        """Create the folder, drop temporaries a killed writer left (and with `overwrite`, every part). Call it in
        one process, before any process writes parts."""
        if overwrite and self.folder.exists():
            for part in self.folder.glob("part-*.safetensors"):
                part.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_leftover_temporaries(self.folder)

    def refresh(self) -> None:
        """Learn about parts written since the last look (by this process or others)."""
        if not self.folder.is_dir():
            return
        from safetensors import safe_open

        for path in sorted(self.folder.glob("part-*.safetensors")):
            if path.name not in self._positions:
                with safe_open(str(path), framework="numpy") as handle:
                    self._positions[path.name] = handle.get_tensor("positions")

    def done(self) -> set[int]:
        """Input positions some part holds."""
        return {int(position) for positions in self._positions.values() for position in positions}

    def write(self, positions: list[int], ids: list[str], embeddings: np.ndarray, fusion_weights: list | None) -> None:
        """Write one part: the records at input `positions` (any order), with their ids, `(records, dim)` embeddings
        and, when kept, per record its `(units, backbones)` fusion weights."""
        if not positions:
            return
        tensors = {
            "positions": torch.tensor(positions, dtype=torch.long),
            "embeddings": torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)),
        }
        if fusion_weights is not None:
            tensors["fusion_weights"] = torch.from_numpy(np.concatenate(fusion_weights, axis=0).astype(np.float32))
            tensors["num_units"] = torch.tensor([len(w) for w in fusion_weights], dtype=torch.long)
        name = _PART_PATTERN.format(min(positions))
        atomic_save_safetensors(tensors, self.folder / name, metadata={"ids": json.dumps(ids)})
        self._positions[name] = tensors["positions"].numpy()

    def covers(self, start: int, stop: int) -> bool:
        """Whether parts hold every position in `start..stop-1`."""
        held = sum(int(((positions >= start) & (positions < stop)).sum()) for positions in self._positions.values())
        return held >= stop - start

    def assemble(self, writer: EmbeddingShardWriter, stop: int) -> None:
        """Hand the writer the records from `writer.records_done` up to `stop` (all held by parts) in input order,
        flush them, then delete the parts whose records are all in the writer's shards."""
        from safetensors import safe_open

        start = writer.records_done + writer.records_queued
        if stop <= start:
            return
        rows: dict[int, tuple[str, int]] = {}
        for name, positions in self._positions.items():
            for row in np.flatnonzero((positions >= start) & (positions < stop)):
                rows.setdefault(int(positions[row]), (name, int(row)))
        missing = [position for position in range(start, stop) if position not in rows]
        if missing:
            raise RuntimeError(f"records {missing[:5]} are in no part; rerun the same command to compute them")
        loaded = {}
        for name in {name for name, _ in rows.values()}:
            with safe_open(str(self.folder / name), framework="numpy") as handle:
                arrays = {key: handle.get_tensor(key) for key in handle.keys()}
                arrays["ids"] = json.loads(handle.metadata()["ids"])
            if "num_units" in arrays:
                arrays["offsets"] = np.concatenate([[0], np.cumsum(arrays["num_units"])])
            loaded[name] = arrays
        ids, embeddings, weights = [], [], []
        for position in range(start, stop):
            name, row = rows[position]
            arrays = loaded[name]
            ids.append(arrays["ids"][row])
            embeddings.append(arrays["embeddings"][row])
            if "offsets" in arrays:
                weights.append(arrays["fusion_weights"][arrays["offsets"][row] : arrays["offsets"][row + 1]])
        writer.add(ids, np.stack(embeddings), weights if weights else None)
        writer.flush()
        self.remove_assembled(writer.records_done)

    def remove_assembled(self, records_done: int) -> None:
        """Delete the parts whose records all sit in the writer's shards (input positions below `records_done`)."""
        for name, positions in list(self._positions.items()):
            if len(positions) == 0 or int(positions.max()) < records_done:
                (self.folder / name).unlink(missing_ok=True)
                del self._positions[name]

    def remove_folder(self) -> None:
        """Delete the parts folder once the run is complete (it is empty then)."""
        if self.folder.is_dir():
            for leftover in self.folder.iterdir():
                leftover.unlink()
            self.folder.rmdir()


__all__ = ["PARTS_FOLDER", "EmbeddingParts"]
