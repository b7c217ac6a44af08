"""Release 0.1's module paths (`hf_metaembed.fusion`, `hf_metaembed.cards`, ...): each is a small module that warns
once and makes its name an alias of the module now holding the code (the same module object, so patching one patches
both). The list of moved modules is the set of these files; CHANGELOG.md lists them too."""

import importlib
import sys
import warnings


def alias_module(old: str, new: str) -> None:
    """Warn that `old` moved to `new`, and make `import old` give the module `new`."""
    warnings.warn(f"{old} moved in hf_metaembed 0.2: import {new} instead", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
