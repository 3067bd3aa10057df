"""hf:PATH with a tiny random GPT-2 and a word-level tokenizer built on the spot (no downloads)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from generate_helpers import cqa_examples  # noqa: E402

from sbs_data.generate.options import PlanSpec, RunOptions  # noqa: E402
from sbs_data.generate.run import Settings, generate  # noqa: E402
from sbs_data.teachers.registry import parse_spec  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = tmp_path_factory.mktemp("tiny-gpt2")
    words = (
        "q which word is number answer choices a b c d e alpha beta gamma delta epsilon so the answer".split()
    )
    vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(words))}}
    for i in range(40):
        vocab.setdefault(str(i), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    fast.save_pretrained(path)
    cfg = transformers.GPT2Config(
        vocab_size=len(vocab),
        n_positions=2048,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
    )
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def test_hf_teacher_batches_and_records_tokens(ws, tiny_model):
    cqa_examples(ws, n=6)
    teacher = parse_spec(f"hf:{tiny_model}", batch_size=4, batch_wait=0.2)
    res = generate(
        ws,
        "toy",
        PlanSpec(teacher, params={"max_tokens": 5}),
        RunOptions(settings=Settings(concurrency=8, progress=False), offline=True),
    )
    assert res.version.ref == f"toy-{tiny_model.name}@1"
    rows = ws.all(
        f"SELECT raw, prompt_tokens, completion_tokens, finish_reason, parse_status FROM generations_at('{res.version.ref}')"
    )
    assert len(rows) == 6
    assert all(r[0] is not None and r[1] > 50 and 1 <= r[2] <= 5 and r[3] in ("stop", "length") for r in rows)
    assert max(teacher.batch_sizes) > 1 and sum(teacher.batch_sizes) == 6  # really batched
    assert res.summary["spent_usd"] == 0.0
    again = generate(
        ws,
        "toy",
        PlanSpec(f"hf:{tiny_model}", params={"max_tokens": 5}),
        RunOptions(settings=Settings(progress=False)),
    )
    assert again.summary["called"] == 0  # cached like any other teacher
