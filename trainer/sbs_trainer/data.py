"""Read an sbs-data export (manifest + shards) into plain rows; the shard schema is the only contract."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

FORMAT = "sbs-data-shards"
SCHEMA_VERSIONS = {1, 2}  # 2: the `hinted` column (rationalized rows)
MODES = ("sbs", "standard", "distill")
PREDICT_PREFIX = "predict: "
EXPLAIN_PREFIX = "explain: "

# Which row column holds each training target, by mode. `label` is the target chosen at export time.
TARGET_COLUMNS: dict[str, dict[str, str]] = {
    "sbs": {"label": "label", "rationale": "rationale"},
    "standard": {"label": "gold_label"},
    "distill": {"label": "teacher_label"},
}
_READ_COLUMNS = [
    "example_id",
    "task",
    "split",
    "input",
    "label",
    "gold_label",
    "teacher_label",
    "rationale",
    "hinted",
]
HINTED = ("keep", "drop")


class ExportError(ValueError):
    """The export folder cannot be trained on as it is; the message says why and what to do."""


@dataclass
class Row:
    example_id: str
    task: str
    input: str
    gold: str | None  # what accuracy is measured against
    targets: dict[str, str]  # task name ("label", "rationale") -> target text


def read_manifest(data_dir: str | Path) -> dict:
    """Load and check DIR/manifest.json; refuses formats and schema versions it does not know."""
    path = Path(data_dir) / "manifest.json"
    if not Path(data_dir).is_dir():
        raise ExportError(f"{data_dir}: no such export folder")
    if not path.is_file():
        raise ExportError(
            f"{data_dir}: no manifest.json; this is not an sbs-data export (run `sbs-data export` to make one)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ExportError(f"{path}: format is {got!r}, expected {FORMAT!r}")
    version = manifest.get("schema_version")
    if version not in SCHEMA_VERSIONS:
        raise ExportError(
            f"{path}: schema_version {version!r} is not supported by this trainer "
            f"(understands {sorted(SCHEMA_VERSIONS)}); upgrade sbs-trainer or re-export"
        )
    if not isinstance(manifest.get("splits"), dict):
        raise ExportError(f"{path}: manifest has no 'splits' table")
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_shard(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        with path.open() as f:
            return [json.loads(line) for line in f if line.strip()]
    cols = [c for c in _READ_COLUMNS if c in pq.read_schema(path).names]
    return pq.read_table(path, columns=cols).to_pylist()


def read_split_rows(data_dir: str | Path, manifest: dict, split: str, verify: bool = True) -> list[dict]:
    """All rows of one split as dicts, shards in manifest order; checks each shard's sha256."""
    info = manifest["splits"].get(split)
    if info is None:
        return []
    rows: list[dict] = []
    for shard in info.get("shards", []):
        path = Path(data_dir) / shard["path"]
        if not path.is_file():
            raise ExportError(f"{path}: shard listed in the manifest is missing")
        if verify and shard.get("sha256") and _sha256(path) != shard["sha256"]:
            raise ExportError(f"{path}: sha256 does not match the manifest (shard changed after export)")
        rows.extend(_read_shard(path))
    return rows


def drop_hinted(raw: list[dict]) -> tuple[list[dict], int]:
    """Rows without the teacher having seen the gold answer (`hinted`, schema 2), and how many were dropped."""
    kept = [r for r in raw if not r.get("hinted")]
    return kept, len(raw) - len(kept)


def build_rows(raw: list[dict], mode: str, split: str, training: bool) -> tuple[list[Row], int]:
    """Turn raw shard rows into `Row`s for `mode`; returns (rows, number dropped for a missing target).

    Training rows need every target of the mode; evaluation rows only need an input and a gold label
    (deduplicated by example_id, since an export holds one row per teacher sample).
    """
    if mode not in MODES:
        raise ExportError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    cols = TARGET_COLUMNS[mode]
    out: list[Row] = []
    dropped = 0
    seen: set[str] = set()
    for r in raw:
        gold = r.get("gold_label")
        if gold is None:
            gold = r.get("label")
        if training:
            targets = {name: r.get(col) for name, col in cols.items()}
            if any(v is None or v == "" for v in targets.values()):
                dropped += 1
                continue
        else:
            if r["example_id"] in seen:
                continue
            seen.add(r["example_id"])
            targets = {}
        out.append(Row(r["example_id"], r.get("task") or "", r.get("input") or "", gold, targets))
    if training and raw and not out:
        missing = ", ".join(f"'{c}'" for c in cols.values())
        hint = (
            " (export with rationales, e.g. from a generations version, or use --mode standard)"
            if mode == "sbs"
            else ""
        )
        raise ExportError(f"mode {mode!r} needs column(s) {missing} but no {split} row has them{hint}")
    return out, dropped


def check_columns(data_dir: str | Path, manifest: dict, mode: str) -> None:
    """Fail fast when the shards lack a column the mode needs (before any model is loaded)."""
    need = set(TARGET_COLUMNS[mode].values()) | {"example_id", "input"}
    listed = manifest.get("columns")
    if listed is None:
        shards = manifest["splits"].get("train", {}).get("shards", [])
        if not shards or not shards[0]["path"].endswith(".parquet"):
            return
        listed = pq.read_schema(Path(data_dir) / shards[0]["path"]).names
    missing = sorted(need - set(listed))
    if missing:
        raise ExportError(f"mode {mode!r} needs column(s) {missing} that the shards in {data_dir} lack")
