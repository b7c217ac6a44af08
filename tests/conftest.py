"""Shared fixtures: tiny backbones of every family, built once per session and loaded through `from_pretrained`."""

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import tiny_backbones  # noqa: E402

# tiny models run faster on one thread, and two test processes never fight over the two cores
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_backbones_root(tmp_path_factory) -> dict[str, str]:
    """Folders of tiny BERT, RoBERTa, ESM-2, ProtT5 and Ankh backbones (random weights, own tokenizers)."""
    return tiny_backbones.make_all_tiny_backbones(tmp_path_factory.mktemp("tiny_backbones"))


@pytest.fixture(scope="session")
def tiny_esm(tiny_backbones_root) -> str:
    return tiny_backbones_root["esm"]


@pytest.fixture(scope="session")
def tiny_prott5(tiny_backbones_root) -> str:
    return tiny_backbones_root["prott5"]


@pytest.fixture(scope="session")
def tiny_ankh(tiny_backbones_root) -> str:
    return tiny_backbones_root["ankh"]


@pytest.fixture(scope="session")
def tiny_bert(tiny_backbones_root) -> str:
    return tiny_backbones_root["bert"]


@pytest.fixture(scope="session")
def tiny_roberta(tiny_backbones_root) -> str:
    return tiny_backbones_root["roberta"]
