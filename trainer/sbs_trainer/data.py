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


def fingerprint(manifest: dict) -> str:
    """What identifies an export's contents: the sha256 of its shards, split by split (for --resume)."""
    parts = [
        f"{split}:{shard.get('path')}:{shard.get('sha256')}"
        for split, info in sorted(manifest.get("splits", {}).items())
        for shard in (info or {}).get("shards", [])
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


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


#: Columns whose values must be text (or null) in every shard row.
_TEXT_COLUMNS = ("example_id", "task", "split", "input", "label", "gold_label", "teacher_label", "rationale")


def _read_shard(path: Path) -> list[dict]:
    """The rows of one shard; a shard that is not readable, or whose text columns hold other types, is an
    ExportError naming the file (and the line or column)."""
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8", errors="strict") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ExportError(f"{path}:{n}: not a JSON row ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ExportError(f"{path}:{n}: a row must be a JSON object")
                rows.append(row)
    else:
        try:
            names = pq.read_schema(path).names
            cols = [c for c in _READ_COLUMNS if c in names]
            rows = pq.read_table(path, columns=cols).to_pylist()
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError; a cut file an OSError
            raise ExportError(f"{path}: not a readable parquet shard ({e}); re-export it") from None
    for n, row in enumerate(rows, 1):
        for c in _TEXT_COLUMNS:
            v = row.get(c)
            if v is not None and not isinstance(v, str):
                raise ExportError(
                    f"{path}: row {n}: column {c!r} holds {type(v).__name__}, not text (see schemas/shard.schema.json)"
                )
    return rows


def shard_path(data_dir: str | Path, rel: object) -> Path:
    """The file a manifest's shard path names, refused unless it lies inside the export folder."""
    if not isinstance(rel, str) or not rel:
        raise ExportError(
            f"{data_dir}/manifest.json: a shard path must be a non-empty relative path, not {rel!r}"
        )
    root = Path(data_dir).resolve()
    path = (root / rel).resolve()
    if Path(rel).is_absolute() or root not in path.parents:
        raise ExportError(
            f"{data_dir}/manifest.json: shard path {rel!r} points outside the export folder; refused"
        )
    return path


def read_split_rows(data_dir: str | Path, manifest: dict, split: str, verify: bool = True) -> list[dict]:
    """All rows of one split as dicts, shards in manifest order; checks each shard's sha256."""
    info = manifest["splits"].get(split)
    if info is None:
        return []
    rows: list[dict] = []
    for shard in info.get("shards", []):
        path = shard_path(data_dir, shard.get("path"))
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
    if training and out and not any(r.input.strip() for r in out):
        raise ExportError(f"every {split} row has an empty input; nothing to learn from (check the export)")
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
        if not shards or not str(shards[0].get("path", "")).endswith(".parquet"):
            return
        try:
            listed = pq.read_schema(shard_path(data_dir, shards[0]["path"])).names
        except (OSError, ValueError) as e:
            raise ExportError(f"{data_dir}: cannot read the first train shard ({e})") from None
    missing = sorted(need - set(listed))
    if missing:
        raise ExportError(f"mode {mode!r} needs column(s) {missing} that the shards in {data_dir} lack")
