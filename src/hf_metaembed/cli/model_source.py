"""Where `embed` gets its model: a saved MetaEmbed folder (`--model`), or backbones (`--backbones A,B` with the new
model's settings, built on the spot and initialised with `--seed`, so every process of a launched run and every
rerun builds the same weights). One object answers what the run needs before the model is loaded (architecture,
processor, fingerprint) and loads it."""

import hashlib
import json
from pathlib import Path

from ..io.files import file_sha256
from .errors import UsageError, one_line
from .folders import backbone_list, check_model_folder, saved_architecture
from .loading import build_from_backbones, load_processor, model_settings, trust_setting, window_settings


class ModelSource:
    """The model of one command run, from `args.model` or `args.backbones` (exactly one is given)."""

    def __init__(self, args) -> None:
        self.args = args
        self.folder = check_model_folder(args.model) if args.model else None
        self.backbones = None if self.folder else backbone_list(args.backbones)
        self.settings = model_settings(args)  # block names checked; a saved model takes only the window settings
        self._check_window_policy()

    @property
    def architecture(self) -> str:
        if self.folder is not None:
            return saved_architecture(self.folder)
        return self.settings.get("architecture", "single")

    def _saved_config(self) -> dict:
        return json.loads((self.folder / "config.json").read_text(encoding="utf-8")) if self.folder else {}

    def _check_window_policy(self) -> None:
        """`--long-sequences window` needs a window size: the saved model's, or `--window-size`."""
        if self.args.long_sequences != "window" or self.args.truncation:
            return
        if "window_size" not in self.settings and self._saved_config().get("window_size") is None:
            raise UsageError(
                "--long-sequences window reads long inputs in sliding windows, but the model has no window size: add "
                "--window-size N (units per window, e.g. 1022 for ESM-2)"
            )

    def processor(self):
        """The processor: the one saved with the model, or a new one for the backbones, laid out for the
        architecture."""
        if self.folder is not None:
            return load_processor(self.folder)
        from ..modeling.processing_metaembed import MetaEmbedProcessor

        try:
            return MetaEmbedProcessor.from_backbones(
                self.backbones, architecture=self.architecture, **trust_setting(self.settings)
            )
        except (OSError, ValueError) as error:  # e.g. a backbone with its own code, not trusted
            raise UsageError(one_line(error)) from None

    def load(self, device):
        """The model on `device`, in eval mode."""
        if self.folder is not None:
            from ..modeling.modeling_metaembed import MetaEmbedModel

            model = MetaEmbedModel.from_pretrained(str(self.folder), **window_settings(self.args))
        else:
            model, _ = build_from_backbones(self.args)
        return model.to(device).eval()

    def fingerprint(self) -> dict:
        """What makes two runs compute the same embeddings: the saved model's files, or the backbones (a local
        folder by its config and weights files), the settings and the seed."""
        if self.folder is not None:
            weights = sorted(self.folder.glob("*.safetensors"))
            return {
                "model": str(self.folder.resolve()),
                "model_config_sha256": file_sha256(self.folder / "config.json"),
                "model_weights": [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights],
                "window": window_settings(self.args),
            }
        return {
            "backbones": [_backbone_fingerprint(name) for name in self.backbones],
            "settings": self.settings,
            "seed": self.args.seed,
        }


def _backbone_fingerprint(name: str) -> str:
    """A local backbone folder: its path and a digest of its config and weights files' sizes and times; a Hub id as
    given."""
    path = Path(name)
    if not path.is_dir():
        return name
    digest = hashlib.sha256()
    for file in sorted(path.glob("*")):
        if file.is_file() and file.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return f"{path.resolve()}@{digest.hexdigest()[:16]}"


__all__ = ["ModelSource"]
