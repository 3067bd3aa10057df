"""Builders for the review/browse tests: a scored, filtered svamp-like version with a few hostile rows, and
`sbs-data browse` run as a real server process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from export_helpers import question
from workspace_helpers import make_examples, make_generations

from sbs_data.quality.filter import filter_version
from sbs_data.quality.recipes import parse_recipe
from sbs_data.quality.signals import score
from sbs_data.workspace import Version, Workspace

#: Teacher text that would run script if a page ever put it in as markup.
HOSTILE_RATIONALE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
HOSTILE_INPUT = "<b onmouseover=alert(1)>bold?</b> <svg onload=window.__pwned=3>"


#: Drops the train rows whose label disagrees with gold (rule `gold`).
RECIPE = parse_recipe(
    '{"name": "gold-only", "steps": [{"name": "gold", "signal": "gold_match", "equals": true}]}', where="test"
)


def build_reviewable(ws: Workspace, n: int = 10, name: str = "rv") -> tuple[Version, Version, Version]:
    """(generations, scores, selection): n train + 2 test examples, 2 samples each (sample 1 of every third
    example answers wrong), example h000 with hostile input and rationale; filtered with RECIPE (drops the wrong train rows, rule `gold`)."""
    rows = [
        {"id": f"tr{i:03d}", "input": question(i), "label": f"{i + 3} + {2 * i + 1}", "split": "train"}
        for i in range(n)
    ]
    rows += [
        {"id": f"te{i:03d}", "input": question(50 + i), "label": f"{53 + i} + {101 + 2 * i}", "split": "test"}
        for i in range(2)
    ]
    rows.append(
        {"id": "h000", "input": HOSTILE_INPUT + " How many is 2 + 2?", "label": "2 + 2", "split": "train"}
    )
    ex = make_examples(ws, name, "svamp", rows)
    gens = []
    for i, r in enumerate(rows):
        for s in range(2):
            wrong = s == 1 and i % 3 == 0
            answer = "999" if wrong else r["label"]
            text = (
                HOSTILE_RATIONALE if r["id"] == "h000" else f"We add the amounts for {r['id']} (sample {s})"
            )
            gens.append(
                {"example_id": r["id"], "sample_idx": s, "raw": f"{text}. So the answer is {answer}."}
            )
    gen = make_generations(ws, ex, gens, name=f"{name}-gen", teacher="fake:teacher-1")
    scored = score(ws, gen.ref)
    sel = filter_version(ws, scored.ref, RECIPE, name=f"{name}-sel").version
    return gen, scored, sel


ROOT = Path(__file__).resolve().parent.parent


class Server:
    """`sbs-data browse` as a subprocess on a free port; `url` is its base address."""

    def __init__(self, db: Path, *args: str):
        self.db, self.args, self.proc, self.url, self.printed = db, args, None, "", ""

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-m",
                "sbs_data.cli",
                "browse",
                *self.args,
                "--port",
                "0",
                "--db",
                str(self.db),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
            if m:
                self.url, self.printed = m.group(1), "".join(seen)
                return
        self.proc.kill()
        raise AssertionError("browse did not print its URL:\n" + "".join(seen))

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> str:
        """Ctrl-C, as a person stops it; returns what it printed after the URL."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, out
        return out
