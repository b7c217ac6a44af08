"""Module paths of release 0.1, kept importable after the package was laid out in folders.

`import hf_metaembed.cards` and `from hf_metaembed.modeling_metaembed import MetaEmbedModel` keep working: each old
dotted name is an alias of the module that now holds the code (the same module object, so patching one patches both).
"""

import importlib
import importlib.abc
import importlib.util
import sys

MOVED_MODULES = {
    **{
        f"hf_metaembed.{name}": f"hf_metaembed.modeling.{name}"
        for name in (
            "backbones",
            "configuration_metaembed",
            "fusion",
            "heads",
            "modeling_metaembed",
            "pairing",
            "pooling",
            "processing_metaembed",
            "registry",
            "safe_files",
            "static_vectors",
            "windowing",
        )
    },
    "hf_metaembed.cards": "hf_metaembed.integrations.cards",
    "hf_metaembed.demo": "hf_metaembed.cli.demo",
    "hf_metaembed.io_utils": "hf_metaembed.io",
    "hf_metaembed.metrics": "hf_metaembed.integrations.metrics",
    "hf_metaembed.peft_utils": "hf_metaembed.integrations.peft",
    "hf_metaembed.pipelines": "hf_metaembed.integrations.pipelines",
    "hf_metaembed.static_vectors_io": "hf_metaembed.io.static_vectors",
    "hf_metaembed.training": "hf_metaembed.integrations.trainer",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the module now holding its code."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module) -> None:
        """Nothing to run: `create_module` returned the already executed target module."""


def install() -> None:
    """Put the finder on `sys.meta_path` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
