"""The `hf-metaembed` command line: `python -m hf_metaembed ...` or `hf-metaembed ...`."""

from .main import main

__all__ = ["main"]
