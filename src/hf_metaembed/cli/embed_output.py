"""The output of `hf-metaembed embed` over its life: work in progress under `OUTPUT.partial/` (shards, parts and the
run's index, see `hf_metaembed.io.embeddings`), renamed to `OUTPUT` (a folder) or assembled into it (`.npy`, `.npz`)
once every record is done. So a name without `.partial` is always a finished output, and a rerun of a finished run
says so and leaves it as it is."""

import json
import os
import shutil
from pathlib import Path

from ..io.embeddings import EMBEDDING_INDEX_NAME, write_npy, write_npz
from .errors import UsageError

PARTIAL_SUFFIX = ".partial"
SHARDS_SUFFIX = ".shards"  # where --keep-shards keeps the shards of a .npy/.npz output
_OLD_PARTS_SUFFIX = ".parts"  # release 0.1's work folder of a .npy/.npz output


def _changed_settings(stored: dict, fingerprint: dict) -> list[str]:
    return sorted(key for key in set(stored) | set(fingerprint) if stored.get(key) != fingerprint.get(key))


class EmbedOutput:
    """The output path of one `embed` run (`kind`: "folder", "npy" or "npz") and its `.partial` work folder."""

    def __init__(self, output: Path, kind: str) -> None:
        self.output = output
        self.kind = kind
        self.partial = output.with_name(output.name + PARTIAL_SUFFIX)
        if kind == "folder" and output.is_dir() and any(output.iterdir()) and self._index() is None:
            raise UsageError(
                f"output folder {str(output)!r} is not empty and holds no embeddings; choose an empty or new folder"
            )

    def _index(self) -> dict | None:
        path = self.output / EMBEDDING_INDEX_NAME
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot read {str(path)!r} ({error}); pass --overwrite to start over") from None

    def finished(self, fingerprint: dict) -> bool:
        """Whether OUTPUT is the finished output of this very run (nothing to do); a finished folder made with other
        settings is a usage error naming what changed."""
        if self.partial.exists():
            return False
        if self.kind != "folder":
            return self.output.exists()
        index = self._index()
        if index is None or not index.get("complete"):
            return False
        changed = _changed_settings(index.get("fingerprint", {}), json.loads(json.dumps(fingerprint)))
        if changed:
            raise UsageError(
                f"output {str(self.output)!r} holds embeddings made with other settings ({', '.join(changed)} "
                "changed); choose another output, or pass --overwrite to replace them"
            )
        self._records = index["records"]
        return True

    def finished_message(self) -> str:
        if self.kind == "folder":
            return (
                f"hf-metaembed embed: {self.output} is complete already ({self._records} embeddings, same input and "
                "settings); nothing to do (--overwrite computes it again)"
            )
        return (
            f"hf-metaembed embed: {self.output} exists and no run is in progress ({self.partial.name} is absent), so "
            "it is the finished output of an earlier run; left as it is (--overwrite computes it again)"
        )

    def adopt_earlier_run(self) -> None:
        """Move the work of a run that an earlier release left in progress under its old name (OUTPUT itself for a
        folder, OUTPUT.parts for a file) to OUTPUT.partial, so the rerun resumes it. Main process only."""
        if self.partial.exists():
            return
        if self.kind == "folder":
            index = self._index()
            if index is not None and not index.get("complete"):
                os.replace(self.output, self.partial)
            return
        old = self.output.with_name(self.output.name + _OLD_PARTS_SUFFIX)
        if old.is_dir() and (old / EMBEDDING_INDEX_NAME).is_file():
            os.replace(old, self.partial)

    def finish(self, keep_shards: bool) -> None:
        """Make OUTPUT from the complete work folder: rename it (a folder; a finished output it replaces is removed
        first), or assemble the .npy/.npz and remove (or, with `keep_shards`, keep as OUTPUT.shards) the shards."""
        if self.kind == "folder":
            if self.output.exists():  # --overwrite of a finished output (holding embeddings only, checked above)
                shutil.rmtree(self.output)
            os.replace(self.partial, self.output)
            return
        (write_npy if self.kind == "npy" else write_npz)(self.partial, self.output)
        if not keep_shards:
            shutil.rmtree(self.partial)
            return
        shards = self.output.with_name(self.output.name + SHARDS_SUFFIX)
        if shards.exists():
            shutil.rmtree(shards)
        os.replace(self.partial, shards)


__all__ = ["PARTIAL_SUFFIX", "SHARDS_SUFFIX", "EmbedOutput"]
