"""benchmarks/gpu_throughput.py: on a machine without a GPU it says so, exits 0 and writes nothing; its RESULTS.md
writer replaces its own section and leaves the others alone."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_throughput.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other\n\nkept\n", encoding="utf-8")
    before = results.read_text(encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(results)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert "needs a CUDA GPU" in completed.stdout and "Nothing was measured" in completed.stdout
    assert results.read_text(encoding="utf-8") == before


def test_the_section_is_replaced_or_appended_and_nothing_else_changes(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## First\n\none\n\n## Last\n\ntwo\n", encoding="utf-8")
    module.write_section(results, f"{module.SECTION}\n\n| a |\n")
    text = results.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark results\n\n## First\n\none\n\n## Last\n\ntwo\n")
    assert text.endswith(f"{module.SECTION}\n\n| a |\n")
    module.write_section(results, f"{module.SECTION}\n\n| b |\n")  # a rerun replaces its own section only
    text = results.read_text(encoding="utf-8")
    assert "| a |" not in text and text.count(module.SECTION) == 1 and "## Last\n\ntwo\n" in text
    middle = text.replace(f"\n{module.SECTION}\n\n| b |\n", "\n").replace(
        "## Last", f"{module.SECTION}\n\n| c |\n\n## Last"
    )
    results.write_text(middle, encoding="utf-8")
    module.write_section(results, f"{module.SECTION}\n\n| d |\n")  # a section in the middle stays in place
    text = results.read_text(encoding="utf-8")
    assert "| c |" not in text and text.index("| d |") < text.index("## Last") and text.count(module.SECTION) == 1
