"""Decoder-only students on the paper's SVAMP export (skipped when the shared data is absent): tiny Llama,
Qwen2 (chat template, no pad token) and GPT-2 students train in `sbs` and `standard` mode on the real
export of the PaLM rationales; their final/ loads with AutoModelForCausalLM alone and generates."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED

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
    import_original(ws, SHARED / "svamp", task="svamp", name="svamp", warn=lambda m: None)
    out = tmp / "export"
    export(ws, "svamp-palm", out, validation_fraction=0.05)
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
            data=str(svamp_export), model=str(students[arch]), mode=mode, output=str(out), max_steps=3,
            batch_size=8, lr=1e-3, max_target_len=48, max_new_tokens=8, max_eval_examples=16, log_every=0,
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
