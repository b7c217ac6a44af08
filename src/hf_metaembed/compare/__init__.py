"""Does fusing backbones help, and with which fusion? A fair comparison of every cell of a grid, from one read of
each backbone.

    from hf_metaembed.compare import compare

    result = compare(["minilm/", "fasttext/"], sequences=texts, labels=labels, output_dir="comparison/",
                     fusions=["concat", "dme", "cdme"], folds=5, seeds=3)
    print(result.to_markdown())      # best cell marked; result.rows holds every cell

Each backbone runs once, into the feature cache (`hf_metaembed.cache`); every cell (each backbone alone, every
fusion over all of them or over each subset, crossed with layers, poolings and pair architectures) trains on the
cached states with the same splits, seeds and budget (`grid`, `splits`, `training`). Per cell: the metric's mean
over seeds, a 95% bootstrap interval over test items and the spread over seeds; per fusion: a paired test against
the best single backbone on the same test items (`statistics`, `summary`). Runs are written atomically and a
stopped comparison resumes; `jobs` runs cells in parallel processes. `hf-metaembed compare` is the command line.

Not model code: the model files never import it.
"""

from .grid import Cell, build_grid, default_fusions
from .runner import Comparison, ComparisonError, ComparisonResult, compare
from .splits import SplitError, Splits, column_splits, identity_splits, kfold_splits
from .statistics import Interval, PairedTest, auroc, bootstrap_interval, matthews_correlation, paired_test
from .training import Budget

__all__ = [
    "Budget",
    "Cell",
    "Comparison",
    "ComparisonError",
    "ComparisonResult",
    "Interval",
    "PairedTest",
    "SplitError",
    "Splits",
    "auroc",
    "bootstrap_interval",
    "build_grid",
    "column_splits",
    "compare",
    "default_fusions",
    "identity_splits",
    "kfold_splits",
    "matthews_correlation",
    "paired_test",
]
