"""The version of hf_metaembed (read without importing torch: the CLI answers `--version` from here)."""

__version__ = "0.2.0"
