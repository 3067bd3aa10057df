"""sbs-train on the paper's SVAMP export of the PaLM rationales (skipped when the shared data is absent).

- Tiny Llama, Qwen2 (chat template, no pad token) and GPT-2 students train in `sbs` and `standard` mode;
  their final/ loads with AutoModelForCausalLM alone and generates.
- `sbs-train sweep` with tiny-t5, standard,sbs x 0.5,1.0 x seeds 0,1: 8 runs, the table, the curve,
  subsets nested and shared by the modes; a re-run trains nothing, in seconds.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from workspace_helpers import SHARED

from sbs_data.export.options import ExportOptions

pytestmark = pytest.mark.skipif(
    not (SHARED / "svamp" / "llm").exists(), reason="shared PaLM data not present"
)


@pytest.fixture(scope="module")
def svamp_export(tmp_path_factory):
    from sbs_data.export.shards import export
    from sbs_data.ingest import import_original
    from sbs_data.workspace import Workspace

    tmp = tmp_path_factory.mktemp("svamp")
    ws = Workspace.open(tmp / "ws.duckdb")
    import_original(ws, SHARED / "svamp", task="svamp", name="svamp")
    out = tmp / "export"
    export(ws, "svamp-palm", out, ExportOptions(validation_fraction=0.05))
    ws.close()
    return out


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    from sbs_trainer.tiny import CAUSAL_ARCHES, write_tiny

    root = tmp_path_factory.mktemp("students")
    return {a: write_tiny(root / a, arch=a, seed=0, d_model=32, heads=2) for a in CAUSAL_ARCHES}


@pytest.mark.parametrize("mode", ["sbs", "standard"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_causal_students_train_on_the_svamp_export(svamp_export, students, tmp_path, arch, mode):
    from sbs_trainer.prompts import PromptFormat
    from sbs_trainer.train import TrainConfig, run
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    out = tmp_path / f"{arch}-{mode}"
    m = run(
        TrainConfig(
            data=str(svamp_export),
            model=str(students[arch]),
            mode=mode,
            output=str(out),
            max_steps=3,
            batch_size=8,
            lr=1e-3,
            max_target_len=48,
            max_new_tokens=8,
            max_eval_examples=16,
            log_every=0,
        )  # fmt: skip
    )
    assert m["student"]["kind"] == "causal" and m["train"]["steps"] == 3
    assert m["student"]["prompt_format"] == ("chat" if arch == "qwen2" else "plain")
    assert m["test"]["n"] == 200 and m["test"]["comparison"] == "numeric" and "accuracy" in m["test"]
    assert ("rationale" in m["train"]["final_loss"]) == (mode == "sbs")
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] == m["test"]["accuracy"]
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    ids = torch.tensor([PromptFormat.load(out / "final").prompt_ids(tok, "label", "Tom has 3 apples.")])
    gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > ids.shape[1]


def test_sweep_on_the_svamp_export(svamp_export, tmp_path):
    from sbs_trainer.cli import main

    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(svamp_export), "--model", "tiny-t5", "--output", str(out),
            "--modes", "standard,sbs", "--fractions", "0.5,1.0", "--seeds", "0,1", "--max-steps", "2",
            "--batch-size", "8", "--max-target-len", "32", "--max-new-tokens", "12", "--max-eval-examples", "16",
            "--log-every", "0"]  # fmt: skip
    torch.set_num_threads(1)
    assert main(args) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 8 and all(r["test_accuracy"] != "" for r in rows)
    summary = (out / "summary.md").read_text()
    assert "± " in summary and "SbS − standard" in summary and (out / "curves.png").is_file()

    def ids(name):
        return (out / "runs" / name / "train_ids.txt").read_text().split()

    for s in (0, 1):
        assert ids(f"sbs-f0.5-s{s}") == ids(f"standard-f0.5-s{s}")
        assert ids(f"sbs-f1.0-s{s}") == ids(f"standard-f1.0-s{s}")
        assert set(ids(f"sbs-f0.5-s{s}")) < set(ids(f"sbs-f1.0-s{s}"))
    from sbs_trainer.cli import sweep_config_from_args
    from sbs_trainer.sweep import sweep

    def no_training(cfg):
        raise AssertionError(f"trained {cfg.output}")

    again = sweep(sweep_config_from_args(args[1:]), train=no_training, say=lambda m: None)
    assert again["trained"] == [] and len(again["skipped"]) == len(again["results"]) == 8
