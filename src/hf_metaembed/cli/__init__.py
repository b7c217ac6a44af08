"""The `hf-metaembed` command line: `python -m hf_metaembed ...` or `hf-metaembed ...`."""

from .errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CLIError, UsageError
from .main import build_parser, main

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "UsageError",
    "build_parser",
    "main",
]
