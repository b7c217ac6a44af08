"""`python -m hf_metaembed ...` runs the `hf-metaembed` command line (so `accelerate launch -m hf_metaembed` works)."""

import sys

from .cli import main

sys.exit(main())
