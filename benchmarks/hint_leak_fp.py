"""False positives of the hint-leak checks on rationales that never saw a hint: the paper's PaLM-540B ones.

Every released completion (../shared/data/sbs_original: ANLI r1, CQA, SVAMP; train, valid, test) is parsed
with its task's parser and checked with `hint_leak` (the phrase patterns) and `hint_echo` (six words of the
default hint, filled with the row's gold answer, repeated in order). None of these teachers was shown a hint,
so every positive is a false one. Prints the counts and the positives; the worst-case times of both checks
on adversarial input are timed here too (never in a unit test).

    .venv/bin/python benchmarks/hint_leak_fp.py [--data ../shared/data/sbs_original/datasets]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sbs_data.generate.prompts import ANSWER_PHRASE, DEFAULT_HINT, answer_text
from sbs_data.tasks import get_task
from sbs_data.text import LEAK_MAX_CHARS, hint_echo, hint_leak

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sbs_original" / "datasets"
SETS = {"anli1": "anli", "cqa": "cqa", "svamp": "svamp"}
SPLITS = {"train": "train", "valid": "valid", "test": "test"}


def rows(folder: Path, ds: str, split: str) -> list[tuple[dict, str]]:
    gold_file = folder / f"{ds}_{split}.json"
    chunks = sorted((folder / "llm").glob(f"{split}_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not chunks:
        return []
    completions = [c for p in chunks for c in json.loads(p.read_text())]
    golds = (
        [json.loads(x) for x in gold_file.read_text().splitlines() if x.strip()] if gold_file.exists() else []
    )
    return list(zip(golds or [{}] * len(completions), completions, strict=False))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    a = ap.parse_args()
    total = leaks = echoes = 0
    shown: list[str] = []
    for ds, task_name in SETS.items():
        folder = a.data / ds
        if not folder.is_dir():
            print(f"{ds}: not found under {a.data}")
            continue
        task = get_task(task_name)
        n_ds = 0
        for split in SPLITS:
            for gold, completion in rows(folder, ds, split):
                rationale = task.parse_completion(completion).rationale or ""
                label = str(gold.get("label", ""))
                answer = answer_text(task, label, gold.get("choices")) if label else ""
                hint = DEFAULT_HINT.replace("{answer}", answer)
                total += 1
                n_ds += 1
                if hint_leak(rationale):
                    leaks += 1
                    shown.append(f"leak  {ds}/{split}: {rationale[:160]!r}")
                if answer and hint_echo(rationale, hint, allowed=f"{ANSWER_PHRASE} {answer}"):
                    echoes += 1
                    shown.append(f"echo  {ds}/{split}: {rationale[:160]!r}")
        print(f"{ds}: {n_ds} rationales")
    print(f"rationales: {total}; hint_leak positives: {leaks}; hint_echo positives: {echoes}")
    for line in shown[:40]:
        print("  ", line)
    # worst cases for the linear-time claim: long near-matches
    bad = ("the hint " + "hint hint of " * 5000)[: LEAK_MAX_CHARS * 2]
    words = ("correct answer is 12 explain step " * 10_000)[: LEAK_MAX_CHARS * 2]
    for name, fn in (("hint_leak", lambda: hint_leak(bad)), ("hint_echo", lambda: hint_echo(words, words))):
        t0 = time.perf_counter()
        for _ in range(20):
            fn()
        print(
            f"worst case {name}: {(time.perf_counter() - t0) / 20 * 1e3:.2f} ms per call ({LEAK_MAX_CHARS} chars read)"
        )


if __name__ == "__main__":
    main()
