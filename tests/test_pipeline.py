"""End to end on the demo data: import -> score -> filter -> export (real exporter) -> sbs-train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sbs_data.ingest import import_original

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from sbs_data.export.shards import export
    from sbs_data.quality.filter import filter_version
    from sbs_data.quality.recipes import load_recipe
    from sbs_data.workspace import Workspace

    tmp = tmp_path_factory.mktemp("pipe")
    ws = Workspace.open(tmp / "p.duckdb")
    import_original(ws, ROOT / "examples" / "demo" / "demo-svamp", task="svamp")
    filter_version(ws, "demo-svamp-palm", load_recipe("strict"), info=lambda m: None)
    out = tmp / "export"
    export(ws, "demo-svamp-palm", out)
    ws.close()
    return out


def test_export_of_filtered_demo_is_a_valid_contract(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["format"] == "sbs-data-shards" and manifest["schema_version"] == 2
    assert set(manifest["splits"]) == {"train", "validation", "test"}
    kinds = [step.get("kind") for step in manifest["lineage"]]
    assert "selection" in kinds and "examples" in kinds


@pytest.mark.parametrize("mode", ["sbs", "standard"])
def test_trainer_reads_the_real_export(exported, tmp_path, mode):
    from sbs_trainer.train import TrainConfig, run

    torch.set_num_threads(1)
    cfg = TrainConfig(
        data=str(exported),
        model="tiny-t5",
        mode=mode,
        output=str(tmp_path / mode),
        max_steps=2,
        batch_size=4,
        max_target_len=32,
        max_input_len=128,
        lr=1e-3,
    )
    run(cfg)
    metrics = json.loads((tmp_path / mode / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 and metrics["mode"] == mode
    assert {"label"} <= set(metrics["train"]["final_loss"])
    if mode == "sbs":
        assert "rationale" in metrics["train"]["final_loss"]
    assert metrics["test"]["n"] > 0
    preds = (tmp_path / mode / "predictions.jsonl").read_text().splitlines()
    assert len(preds) >= metrics["test"]["n"]
