"""`sbs-train --help` says every option's default; metrics are printed at 4 significant digits."""

from __future__ import annotations

import pytest
from sbs_trainer.cli import build_parser
from sbs_trainer.metrics import sig4


@pytest.mark.parametrize("sweep", [False, True])
def test_help_shows_the_defaults(sweep):
    text = " ".join(build_parser(sweep=sweep).format_help().split())
    for shown in ("--lr LR peak learning rate", "(default: 5e-05)", "(default: 0.05)", "(default: 1024)"):
        assert shown in text
    assert "(default: None)" not in text and "(default: False)" not in text
    # a default of 0 is a default too (0 == False must not hide it)
    assert "AdamW weight decay (default: 0.0)" in text and "linear warm-up steps (default: 0)" in text
    if sweep:
        assert "(default: standard,sbs)" in text and "(default: 0.125,0.25,0.5,1.0)" in text
    else:
        assert "(default: sbs)" in text and "(default: 42)" in text


def test_sig4_rounds_floats_in_nested_metrics():
    got = sig4({"loss": {"label": 1.234567, "n": 3}, "acc": [0.333333333, None], "rate": 12345.678})
    assert got == {"loss": {"label": 1.235, "n": 3}, "acc": [0.3333, None], "rate": 12350.0}
    assert sig4(float("nan")) != sig4(float("nan"))  # NaN stays NaN, no crash
