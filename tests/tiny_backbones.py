"""Test-side name for `hf_metaembed.testing` (tiny backbones of every family), kept for `import tiny_backbones`."""

from hf_metaembed.testing import *  # noqa: F403
