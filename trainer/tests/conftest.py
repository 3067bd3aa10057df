"""Fixtures for the trainer tests; torch runs on one thread (with other processes busy on the 2 cores,
2-thread runs were 2-11x slower)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .helpers import svamp_rows, write_export

torch.set_num_threads(1)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """12 train rows (2 teacher samples each of 6 examples), 4 validation, 4 test, in several shards."""
    return write_export(
        tmp_path / "export",
        {
            "train": svamp_rows(6, "train", seed=1, samples=2),
            "validation": svamp_rows(4, "validation", seed=2),
            "test": svamp_rows(4, "test", seed=3),
        },
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random T5 (d_model 32, no dropout) + ByT5 tokenizer saved with save_pretrained."""
    from sbs_trainer.tiny import write_tiny_t5

    return write_tiny_t5(tmp_path_factory.mktemp("tiny") / "t5", seed=0, d_model=32, heads=2, dropout=0.0)
