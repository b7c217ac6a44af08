"""Deprecated since 0.2 (release 0.1's module path): the code lives in `hf_metaembed.modeling.pairing`."""

from ._shim import alias_module

alias_module(__name__, "hf_metaembed.modeling.pairing")
