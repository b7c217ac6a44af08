"""`python -m hf_metaembed.cli ...` runs the `hf-metaembed` command line, as it did when `cli` was one module."""

import sys

from .main import main

sys.exit(main())
