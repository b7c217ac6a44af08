"""The start of every test script that loads saved folders as remote code: a Python where `hf_metaembed` cannot be
imported, as on a machine that never installed it."""

BLOCK_HF_METAEMBED = """
import sys


class BlockLibrary:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_metaembed":
            raise ImportError("hf_metaembed is blocked in this interpreter")


sys.meta_path.insert(0, BlockLibrary())
"""
