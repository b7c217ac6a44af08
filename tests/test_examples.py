"""Every example under `examples/` runs offline as its README says, and prints what its README promises."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# example script -> a line fragment its output must hold
EXPECTED = {
    "ppb_affinity_study/study_grid.py": "| backbone | architecture | setup | test Spearman (95% CI) |",
    "quickstart/quickstart.py": "fusion weights",
    "feature_cache/train_from_cache.py": "second build (resumes, nothing left to do): computed 0 segments",
    "protein_pairs/train_pair_affinity.py": "reloaded model predicts pKd",
    "trainer/train_with_trainer.py": "card metadata: pipeline_tag=text-classification",
    "peft_lora/train_lora.py": "reloaded adapter reproduces the trained logits: max difference 0.00e+00",
    "compare/compare_polarity.py": "| cell | fusion | accuracy (95% CI) | seed sd | Δ vs best single (95% CI) | p |",
    "fitted_fusion/fit_from_cache.py": "reloaded pca model reproduces the logits: max difference 0.00e+00",
}


def test_every_example_is_listed():
    assert sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.glob("*/*.py")) == sorted(EXPECTED)


# arguments the README gives for an offline run
ARGUMENTS = {
    "ppb_affinity_study/study_grid.py": ["--smoke"],
    "compare/compare_polarity.py": ["--smoke"],
    "fitted_fusion/fit_from_cache.py": ["--smoke"],
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *ARGUMENTS.get(script, [])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert EXPECTED[script] in result.stdout, result.stdout[-3000:]
