"""The start of every test script that loads saved folders as remote code: a Python where `hf_metaembed` cannot be
imported, as on a machine that never installed it."""

import os
import subprocess
import sys

BLOCK_HF_METAEMBED = """
import sys


class BlockLibrary:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_metaembed":
            raise ImportError("hf_metaembed is blocked in this interpreter")


sys.meta_path.insert(0, BlockLibrary())
"""

# after BLOCK_HF_METAEMBED: fail the script at once if the block did not take
ASSERT_BLOCKED = """
try:
    import hf_metaembed  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("hf_metaembed should not be importable here")
"""


def run_without_the_library(script: str, arguments: list, folder) -> subprocess.CompletedProcess:
    """Run `script` (Python source, after BLOCK_HF_METAEMBED and ASSERT_BLOCKED) in a fresh interpreter that cannot
    import hf_metaembed, offline, on one thread (the summation order of this process, for equal outputs), with its
    own remote-code module cache under `folder`."""
    path = os.path.join(folder, "remote_script.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(BLOCK_HF_METAEMBED + ASSERT_BLOCKED + script)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=os.path.join(folder, "modules"), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, path, *map(str, arguments)], env=env, cwd=folder, capture_output=True, text=True, timeout=300
    )
