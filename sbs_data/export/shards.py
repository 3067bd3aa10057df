"""Export a version as training shards: `DIR/<split>/part-NNNNN.parquet|jsonl`, `manifest.json`, `README.md`.

The shards are the only contract with any trainer (`schemas/shard.schema.json`, `schemas/manifest.schema.json`).
Output is deterministic: rows are sorted, the parquet writer settings are pinned, nothing time-dependent goes
into shards, and the manifest carries the version's own `created_at`, never the export time. The same version
and options therefore give byte-identical files (with the same pyarrow, which stamps its version in parquet).
The folder is written next to DIR and swapped in at the end, so a failed export never leaves half a folder;
the staging folder is locked while in use, so the next export can remove those of killed ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sbs_data import SbsError, __version__
from sbs_data.export.contamination import FLAGGED, find_contamination
from sbs_data.export.options import ExportOptions
from sbs_data.export.validate import validate_table
from sbs_data.ingest import canonical_split
from sbs_data.schemas import load_schema, validate
from sbs_data.workspace import Version, Workspace, config_hash

SPLITS = ("train", "validation", "test")
FILE_FORMATS = ("parquet", "jsonl")
LABEL_SOURCES = ("gold", "teacher")
#: Which text becomes a row's `rationale`: the completion's, or the teacher's reasoning summary.
RATIONALE_SOURCES = ("output", "reasoning_summary")
#: The manifest's `schema_version`: 2 added the `hinted` column (rationalized rows).
SCHEMA_VERSION = 2
#: Row columns in contract order (the shard schema's `required` list).
COLUMNS: list[str] = list(load_schema("shard")["required"])
#: Optional columns, written only when some exported row has a value (so older exports stay as they were).
OPTIONAL_COLUMNS = ("teacher_reasoning",)
_PART_RE = re.compile(r"^(train|validation|test)/part-\d{5}\.(parquet|jsonl)$")
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|authorization|credential)", re.I)
_SECRET_VALUE = re.compile(r"^(hf_|sk-|sk_|xai-|gsk_)[A-Za-z0-9_\-]{8,}$")
# Pinned so that the bytes only depend on the rows (and the pyarrow version, which parquet records).
_PARQUET_OPTS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "data_page_size": 1 << 20,
    "write_page_index": False,
    "store_schema": True,
}
_ROW_GROUP = 16_384
#: DuckDB's memory cap for the whole export (temp table, sorts, contamination join): it spills beyond.
_DUCKDB_MEMORY = 256 * 2**20  # 1M rows with carving, or 63% of train contaminated, fit
#: The export's rows while it runs: a temp table of this connection (it spills; Python holds a row group).
_ROWS = "_sbs_export_rows"
#: The columns a shard is made from (`label` is picked from gold_label or teacher_label).
_READ = ("example_id", "task", "split", "input", "gold_label", "teacher_label", "rationale", "teacher",
         "sample_idx", "choices", "quality", "hinted", "teacher_reasoning")  # fmt: skip


@dataclass
class ExportResult:
    """What `export` wrote: the folder, its manifest, and the contamination report."""

    out: Path
    manifest: dict[str, Any]

    def summary_rows(self) -> list[dict[str, Any]]:
        rows = []
        for split, info in self.manifest["splits"].items():
            rows.append(
                {
                    "split": split,
                    "rows": info["rows"],
                    "examples": info.get("examples"),
                    "shards": len(info["shards"]),
                    "path": str(self.out / split),
                }
            )
        return rows


normalize_split = canonical_split  # `valid`/`val`/`dev` -> `validation`; other names lower-cased


# ---------------------------------------------------------------------------------------------
# Reading rows


def _signal_columns(ws: Workspace) -> list[tuple[str, str]]:
    """(name, duckdb type) of the signal columns of `sbs_scores`, if that table exists."""
    rows = ws.all(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'sbs_scores' "
        "AND table_schema = 'main' ORDER BY ordinal_position"
    )
    skip = {"version_id", "example_id", "sample_idx", "split", "teacher", "hinted"}  # keys and copies
    return [(n, t) for n, t in rows if n not in skip]


def _signal_expr(name: str, dtype: str) -> str:
    col = 'q."' + name.replace('"', '""') + '"'
    t = dtype.upper()
    if t == "BOOLEAN":
        return col
    if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"):
        return f"{col}::BIGINT"
    if t in ("FLOAT", "DOUBLE", "REAL") or t.startswith("DECIMAL"):
        return f"CASE WHEN isfinite({col}::DOUBLE) THEN {col}::DOUBLE END"
    return f"{col}::VARCHAR"  # UBIGINT hashes etc. do not fit int64: keep them exact as text


def _rows_sql(ws: Workspace, v: Version, rationale_source: str = "output") -> tuple[str, list]:
    """All rows visible in `v` joined to their examples (and quality signals), one per (example, sample);
    the `rationale` is the completion's, or with `rationale_source="reasoning_summary"` the teacher's
    reasoning summary."""
    if v.examples_id is None:
        raise SbsError(f"{v.ref}: no examples version behind it; nothing to export")
    if v.kind == "examples":
        inner, params = ws.rows_query(v, columns="example_id")
        gen = (
            f"SELECT example_id, 0::BIGINT AS sample_idx, NULL::VARCHAR AS teacher, NULL::VARCHAR AS rationale, "
            f"NULL::VARCHAR AS pred_label, NULL::BIGINT AS prompt_tokens, NULL::BIGINT AS completion_tokens, "
            f"NULL::DOUBLE AS cost_usd, false AS hinted, NULL::VARCHAR AS teacher_reasoning FROM ({inner})"
        )
    else:
        inner, params = ws.rows_query(
            v,
            columns="example_id, sample_idx, teacher, rationale, pred_label, prompt_tokens, completion_tokens, cost_usd, "
            "hinted, teacher_reasoning",
        )
        gen = f"SELECT * FROM ({inner})"
    params = list(params) + [v.examples_id]
    signals = _signal_columns(ws) if v.scores_id is not None else []
    if signals:
        fields = ", ".join("'" + n.replace("'", "''") + "': " + _signal_expr(n, t) for n, t in signals)
        quality = f"CASE WHEN q.example_id IS NULL THEN NULL ELSE {{{fields}}} END"
        join_q = (
            "LEFT JOIN sbs_scores q ON q.version_id = ? AND q.example_id = g.example_id "
            "AND q.sample_idx = g.sample_idx"
        )
        params.append(v.scores_id)
    else:
        quality, join_q = "NULL", ""
    sql = f"""
        SELECT g.example_id, e.task,
               CASE lower(trim(e.split)) WHEN 'valid' THEN 'validation' WHEN 'val' THEN 'validation'
                    WHEN 'dev' THEN 'validation' ELSE lower(trim(e.split)) END AS split,
               e.input_text AS input, e.label AS gold_label, g.pred_label AS teacher_label,
               {"g.teacher_reasoning" if rationale_source == "reasoning_summary" else "g.rationale"} AS rationale,
               g.teacher, g.sample_idx::BIGINT AS sample_idx, e.choices, {quality} AS quality,
               coalesce(g.hinted, false) AS hinted, g.teacher_reasoning,
               g.prompt_tokens::BIGINT AS _prompt_tokens, g.completion_tokens::BIGINT AS _completion_tokens,
               g.cost_usd::DOUBLE AS _cost_usd, e.example_id IS NULL AS _missing
        FROM ({gen}) g
        LEFT JOIN sbs_examples e ON e.version_id = ? AND e.example_id = g.example_id
        {join_q}
    """
    return sql, params


def _load_rows(ws: Workspace, v: Version, rationale_source: str = "output") -> int:
    """Copy `v`'s rows into the temp table `_ROWS` (which spills to disk under the export's memory cap, so
    a million rationales are never all in memory) and check them; returns the row count."""
    sql, params = _rows_sql(ws, v, rationale_source)
    ws.execute(f"CREATE OR REPLACE TEMP TABLE {_ROWS} AS {sql}", params)
    n, missing = ws.all(f"SELECT count(*), count(*) FILTER (WHERE _missing) FROM {_ROWS}")[0]
    if missing:
        ids = [r[0] for r in ws.all(f"SELECT example_id FROM {_ROWS} WHERE _missing ORDER BY 1 LIMIT 5")]
        raise SbsError(
            f"{v.ref}: {missing} row(s) answer examples absent from {ws.by_id(v.examples_id).ref} "
            f"(e.g. {', '.join(map(str, ids))}); the workspace is inconsistent"
        )
    if ws.one(f"SELECT count(*) FROM (SELECT DISTINCT example_id, sample_idx FROM {_ROWS})") != n:
        raise SbsError(f"{v.ref}: duplicate (example_id, sample_idx) rows; are there duplicate scores rows?")
    return int(n)


def _count(ws: Workspace) -> int:
    return int(ws.one(f"SELECT count(*) FROM {_ROWS}"))


def _present(ws: Workspace) -> list[str]:
    return [r[0] for r in ws.all(f"SELECT DISTINCT split FROM {_ROWS} ORDER BY 1")]


# ---------------------------------------------------------------------------------------------
# Splits, labels, shaping


def _carve_count(n: int, fraction: float) -> int:
    """How many of n train examples become validation: round(fraction * n), at least 1 and leaving 1."""
    k = round(fraction * n)
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    return k


def carve_validation(example_ids: list[str], fraction: float, seed: int) -> set[str]:
    """Pick round(fraction * n) example ids, deterministically from (seed, id) alone: order-independent.
    (The reference for `_carve`, which does the same in DuckDB.)"""
    ids = sorted(set(example_ids), key=lambda e: (hashlib.sha256(f"{seed}:{e}".encode()).hexdigest(), e))
    return set(ids[: _carve_count(len(ids), fraction)])


def _carve(ws: Workspace, fraction: float, seed: int) -> None:
    """Move the `carve_validation` pick of the train examples (all their samples) to the validation split."""
    n = ws.one(f"SELECT count(DISTINCT example_id) FROM {_ROWS} WHERE split = 'train'")
    ws.execute(
        f"UPDATE {_ROWS} SET split = 'validation' WHERE split = 'train' AND example_id IN ("
        f"SELECT example_id FROM (SELECT DISTINCT example_id FROM {_ROWS} WHERE split = 'train') "
        "ORDER BY sha256(? || ':' || example_id), example_id LIMIT ?)",
        [str(seed), _carve_count(int(n), fraction)],
    )


def _out_schema(quality_type: pa.DataType, optional: tuple[str, ...] = ()) -> pa.Schema:
    """The shard schema: the contract's columns, then the `optional` ones this export carries."""
    if pa.types.is_struct(quality_type):
        fields = []
        for f in quality_type:
            t = f.type
            if pa.types.is_integer(t):
                t = pa.int64()
            elif pa.types.is_floating(t) or pa.types.is_decimal(t):
                t = pa.float64()
            elif not pa.types.is_boolean(t):
                t = pa.string()
            fields.append(pa.field(f.name, t))
        quality_type = pa.struct(fields)
    else:
        quality_type = pa.null()
    s = pa.string()
    types = {
        "example_id": s, "task": s, "split": s, "input": s, "label": s, "gold_label": s, "teacher_label": s,
        "rationale": s, "teacher": s, "sample_idx": pa.int64(), "choices": pa.list_(pa.string()), "quality": quality_type,
        "hinted": pa.bool_(), "teacher_reasoning": s,
    }  # fmt: skip
    return pa.schema([pa.field(c, types[c]) for c in [*COLUMNS, *optional]])


def _shape(table: pa.Table, label_source: str, schema: pa.Schema) -> pa.Table:
    label = table.column("gold_label" if label_source == "gold" else "teacher_label")
    table = table.append_column("label", label)
    cols = []
    for f in schema:
        col = table.column(f.name)
        cols.append(col if col.type == f.type else col.cast(f.type))
    return pa.Table.from_arrays(cols, schema=schema)


# ---------------------------------------------------------------------------------------------
# Writing


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Slicer:
    """Exactly-sized tables from a stream of record batches, so that shard and row-group boundaries (and
    therefore the bytes written) do not depend on how DuckDB happened to batch its result."""

    def __init__(self, batches: Iterator[pa.RecordBatch]):
        self._it = iter(batches)
        self._buf: list[pa.RecordBatch] = []
        self._n = 0

    def take(self, n: int) -> pa.Table | None:
        while self._n < n:
            b = next(self._it, None)
            if b is None:
                break
            if b.num_rows:
                self._buf.append(b)
                self._n += b.num_rows
        if not self._n:
            return None
        t = pa.Table.from_batches(self._buf)
        rest = t.slice(n)
        self._buf, self._n = rest.to_batches(), rest.num_rows
        # Fresh buffers, one chunk per column: parquet pages are cut per written chunk and Arrow sizes count
        # whole buffers, so both would otherwise follow DuckDB's batch boundaries.
        head = t.slice(0, n).combine_chunks()
        return head.take(pa.array(range(head.num_rows), pa.int64()))


def _write_split(
    ws: Workspace,
    split: str,
    tmp: Path,
    *,
    file_format: str,
    max_rows: int,
    label_source: str,
    schema: pa.Schema,
) -> tuple[list[dict[str, Any]], int, int]:
    """Stream one split, sorted by (example_id, sample_idx), into shards of `max_rows` rows (row groups of
    `_ROW_GROUP`), each piece validated against the shard schema before it is written.
    Returns (the shards, their bytes on disk, their bytes in Arrow)."""
    ext = "parquet" if file_format == "parquet" else "jsonl"
    cols = ", ".join(f'"{c}"' for c in _READ if c in schema.names or c not in OPTIONAL_COLUMNS)
    rows = _Slicer(
        ws.stream(
            f"SELECT {cols} FROM {_ROWS} WHERE split = ? ORDER BY example_id, sample_idx", [split], _ROW_GROUP
        )
    )
    shards: list[dict[str, Any]] = []
    on_disk = in_arrow = 0
    piece = rows.take(min(_ROW_GROUP, max_rows))
    while piece is not None:
        rel = f"{split}/part-{len(shards):05d}.{ext}"
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with _ShardWriter(path, file_format, schema) as w:
            while piece is not None:
                shaped = _shape(piece, label_source, schema)
                validate_table(shaped, "shard", key_columns=("example_id", "sample_idx"))
                w.write(shaped)
                n += shaped.num_rows
                in_arrow += shaped.nbytes
                piece = rows.take(min(_ROW_GROUP, max_rows - n)) if n < max_rows else None
        on_disk += path.stat().st_size
        shards.append({"path": rel, "rows": n, "sha256": _sha256(path)})
        if n == max_rows:
            piece = rows.take(min(_ROW_GROUP, max_rows))
    return shards, on_disk, in_arrow


class _ShardWriter:
    """One shard file, written a row group (parquet) or a batch of lines (jsonl) at a time."""

    def __init__(self, path: Path, file_format: str, schema: pa.Schema):
        self._pq = pq.ParquetWriter(path, schema, **_PARQUET_OPTS) if file_format == "parquet" else None
        self._f = None if self._pq else open(path, "w", encoding="utf-8", newline="\n")

    def write(self, table: pa.Table) -> None:
        if self._pq is not None:
            self._pq.write_table(table, row_group_size=_ROW_GROUP)
            return
        assert self._f is not None
        for batch in table.to_batches(max_chunksize=8192):
            for row in batch.to_pylist():
                self._f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pq is not None:
            self._pq.close()
        elif self._f is not None:
            self._f.close()


def _out_folder(out: str | Path) -> Path:
    """--out as an absolute path (a symlink's target), refusing the places a swap cannot replace: `/`, the
    current folder, its parents."""
    path = Path(os.path.abspath(out))
    if path.is_symlink():
        # The export goes where the link points: replacing the link itself would leave its old target (and
        # a dangling `.NAME.old-*` link) behind. The link stays as it is.
        try:
            path = path.resolve(strict=False)
        except (OSError, RuntimeError) as e:  # a loop of links
            raise SbsError(f"--out {out}: a symlink that cannot be followed ({e})") from None
    if not path.name:
        raise SbsError(f"--out {out}: the root folder cannot be an export folder; choose a new folder")
    cwd = Path.cwd()
    if path == cwd or path in cwd.parents:
        raise SbsError(
            f"--out {out}: is the current folder (or holds it), which an export replaces; choose a subfolder"
        )
    return path


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that holds anything other than a previous export.

    An export is two levels deep (split folders of part files), so only those two levels are looked at and
    the first few foreign entries end the look: `--out /` answers at once instead of walking the disk.
    """
    if out.exists() and not out.is_dir():
        raise SbsError(f"--out {out}: exists and is not a folder")
    if not out.exists():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SbsError(f"--out {out}: cannot create folder {out.parent}: {e.strerror or e}") from e
        return
    foreign: list[str] = []
    try:
        with os.scandir(out) as top:
            for entry in top:
                if entry.is_dir(follow_symlinks=False) and entry.name in SPLITS:
                    with os.scandir(entry.path) as inner:
                        for f in inner:
                            rel = f"{entry.name}/{f.name}"
                            if not (f.is_file(follow_symlinks=False) and _PART_RE.match(rel)):
                                foreign.append(rel + ("/" if f.is_dir() else ""))
                                if len(foreign) >= 5:
                                    break
                elif entry.is_dir() or entry.name not in ("manifest.json", "README.md"):
                    foreign.append(entry.name + ("/" if entry.is_dir() else ""))
                if len(foreign) >= 5:
                    break
    except OSError as e:
        raise SbsError(f"--out {out}: cannot read it: {e.strerror or e}") from e
    if foreign:
        raise SbsError(
            f"--out {out}: holds files that are not part of an sbs-data export ({', '.join(sorted(foreign))}); "
            "choose an empty or new folder"
        )


def _lock_path(out: Path, sfx: str) -> Path:
    return out.parent / f".{out.name}.export-{sfx}.lock"


def _remove_stale(out: Path) -> None:
    """Remove the staging (`.NAME.tmp-*`) and swapped-out (`.NAME.old-*`) folders of exports that were killed:
    those whose lock no live export holds."""
    from filelock import FileLock, Timeout

    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp|old|export)-([0-9a-z_]+)(?:\.lock)?")
    try:
        found = sorted({m[1] for p in out.parent.iterdir() if (m := pattern.fullmatch(p.name))})
    except OSError:
        return
    for sfx in found:
        lock = FileLock(_lock_path(out, sfx))
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            continue  # a running export's (or not ours to touch)
        try:
            for kind in ("tmp", "old"):
                shutil.rmtree(out.parent / f".{out.name}.{kind}-{sfx}", ignore_errors=True)
        finally:
            lock.release()
            _lock_path(out, sfx).unlink(missing_ok=True)


@contextmanager
def _staging(out: Path) -> Iterator[tuple[Path, str]]:
    """A new folder next to `out` to write the export into (made with the umask's permissions, unlike
    mkdtemp's 0700), locked while in use; stale ones of killed exports are removed first."""
    from filelock import FileLock

    _remove_stale(out)
    sfx = uuid.uuid4().hex[:12]
    lock = FileLock(_lock_path(out, sfx))
    try:
        with lock:
            tmp = out.parent / f".{out.name}.tmp-{sfx}"
            tmp.mkdir()
            try:
                yield tmp, sfx
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        _lock_path(out, sfx).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Lineage, totals, stats


def _sanitize(obj: Any) -> Any:
    """Drop anything that looks like a credential from a config before it goes into a public manifest."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if _SECRET_KEY.search(str(k)) else _sanitize(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_sanitize(x) for x in obj]
    if isinstance(obj, str) and _SECRET_VALUE.match(obj):
        return "<redacted>"
    return obj


def _hashes(config: Any, out: dict[str, Any], prefix: str = "") -> None:
    """Collect `*_hash` values, and hash `prompt`/`recipe` sections that have none, anywhere in a config."""
    if not isinstance(config, dict):
        return
    for k, val in config.items():
        key = str(k)
        if key.endswith("_hash") and isinstance(val, str):
            out.setdefault(key, val)
        elif (
            key in ("prompt", "recipe", "prompt_template", "template") and val and f"{key}_hash" not in config
        ):
            out.setdefault(f"{key}_hash", config_hash(val))
        if isinstance(val, dict):
            _hashes(val, out, prefix + key + ".")


def lineage(ws: Workspace, ref: str) -> list[dict[str, Any]]:
    """The version and its ancestors with what made each: kinds, config hashes, teachers, prompt/recipe hashes."""
    out = []
    for v in ws.lineage(ref):
        entry: dict[str, Any] = {
            "ref": v.ref,
            "kind": v.kind,
            "task": v.task,
            "parents": [ws.by_id(p).ref for p in v.parents],
            "config_hash": v.config_hash,
            "rows": v.row_count,
            "created_at": v.created_at.isoformat(sep=" ", timespec="seconds"),
        }
        if v.base_id == v.version_id and v.kind != "examples":
            entry["teachers"] = [
                r[0]
                for r in ws.all(
                    "SELECT DISTINCT teacher FROM sbs_generations WHERE version_id = ? ORDER BY 1",
                    [v.version_id],
                )
            ]
        elif isinstance(v.config.get("teacher"), str):
            entry["teachers"] = [v.config["teacher"]]
        hashes: dict[str, Any] = {}
        _hashes(v.config, hashes)
        entry.update(dict(sorted(hashes.items())))
        if v.note:
            entry["note"] = v.note
        entry["config"] = _sanitize({k: c for k, c in v.config.items() if k not in ("task_def",)})
        out.append(entry)
    return out


def _totals(ws: Workspace, v: Version) -> dict[str, Any]:
    rows, examples, pt, ct, cost = ws.all(
        f"SELECT count(*), count(DISTINCT example_id), coalesce(sum(_prompt_tokens), 0), "
        f"coalesce(sum(_completion_tokens), 0), coalesce(sum(_cost_usd), 0) FROM {_ROWS}"
    )[0]
    totals: dict[str, Any] = {
        "rows": int(rows),
        "examples": int(examples),
        "exported": {
            "prompt_tokens": int(pt),
            "completion_tokens": int(ct),
            "cost_usd": round(float(cost), 6),
        },
    }
    if v.kind != "examples" and v.base_id is not None:
        n, pt, ct, cost = ws.all(
            "SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
            "coalesce(sum(cost_usd), 0) FROM sbs_generations WHERE version_id = ?",
            [v.base_id],
        )[0]
        totals["generated"] = {
            "generations": int(n),
            "prompt_tokens": int(pt),
            "completion_tokens": int(ct),
            "cost_usd": round(float(cost), 6),
        }
    return totals


def _funnel(ws: Workspace, v: Version) -> list[dict[str, Any]]:
    """Per-reason drop counts of the version's selection (recipe steps), largest first."""
    if v.selection_id is None:
        return []
    rows = ws.all(
        "SELECT coalesce(reason, '(no reason)'), count(*) FROM sbs_selections WHERE version_id = ? AND NOT keep "
        "GROUP BY 1 ORDER BY 2 DESC, 1",
        [v.selection_id],
    )
    return [{"step": r, "dropped": int(n)} for r, n in rows]


def _quality_stats(ws: Workspace, schema: pa.Schema) -> dict[str, dict[str, Any]]:
    """Per signal: how many rows have it, and its mean/min/max, true rate or three commonest values."""
    qtype = schema.field("quality").type
    if not pa.types.is_struct(qtype):
        return {}
    from sbs_data.quality.signals import SIGNAL_BY_NAME

    out: dict[str, dict[str, Any]] = {}
    for f in qtype:
        sig = SIGNAL_BY_NAME.get(f.name)
        if sig is not None and sig.dtype == "key":
            continue  # hashes and cluster ids group rows for dedup: their mean or commonest value means nothing
        col = "struct_extract(quality, '" + f.name.replace("'", "''") + "')"
        numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
        present, mean, lo, hi, trues = ws.all(
            f"SELECT count({col}), "
            + (f"avg({col}), min({col}), max({col}), " if numeric else "NULL, NULL, NULL, ")
            + (f"sum({col}::BIGINT) " if pa.types.is_boolean(f.type) else "NULL ")
            + f"FROM {_ROWS}"
        )[0]
        st: dict[str, Any] = {"present": int(present)}
        if present and numeric:
            st.update(mean=round(float(mean), 4), min=lo, max=hi)
        elif present and pa.types.is_boolean(f.type):
            st["true_rate"] = round(int(trues or 0) / present, 4)
        elif present:
            top = ws.all(
                f"SELECT {col}::VARCHAR AS v, count(*) AS n FROM {_ROWS} WHERE {col} IS NOT NULL "
                "GROUP BY 1 ORDER BY n DESC, v LIMIT 3"
            )
            st["top"] = {str(v): int(n) for v, n in top}
        out[f.name] = st
    return out


#: Rows shown in the dataset card (the first ones, train first), their texts cut in SQL.
CARD_EXAMPLES = 3


def _card_examples(ws: Workspace, label_source: str) -> list[dict[str, Any]]:
    """The card's example rows; texts are cut here (longer than the card shows, so it can mark the cut)."""
    label = "teacher_label" if label_source == "teacher" else "gold_label"
    rows = ws.all(
        f"""SELECT example_id, split, left(input, 400), left(rationale, 400), left({label}, 200) FROM {_ROWS}
            ORDER BY CASE split WHEN 'train' THEN 0 WHEN 'validation' THEN 1 ELSE 2 END, example_id, sample_idx
            LIMIT {CARD_EXAMPLES}"""
    )
    return [
        {"example_id": e, "split": sp, "input": i, "rationale": r, "label": lab} for e, sp, i, r, lab in rows
    ]


def _label_stats(ws: Workspace, task: str | None) -> dict[str, Any]:
    """Rationale rate and teacher/gold agreement, with the task's own comparison (e.g. SVAMP's values of
    expressions) only for the distinct pairs that differ as text, streamed, so memory stays flat."""
    n, rat, labelled, agree = ws.all(
        "SELECT count(*), count(rationale), "
        "count(*) FILTER (WHERE gold_label IS NOT NULL AND teacher_label IS NOT NULL), "
        f"count(*) FILTER (WHERE gold_label = teacher_label) FROM {_ROWS}"
    )[0]
    stats: dict[str, Any] = {"rationale_rate": round(rat / n, 4) if n else None}
    if labelled:
        if agree < labelled:
            try:
                from sbs_data.tasks import get_task

                same = get_task(task).same_label if task else None
            except Exception:  # unknown / user task not resolvable here: fall back to exact comparison
                same = None
            if same is not None:
                pairs = ws.stream(
                    f"SELECT gold_label, teacher_label, choices, count(*) FROM {_ROWS} "
                    "WHERE gold_label <> teacher_label GROUP BY ALL",
                    batch_rows=8192,
                )
                for batch in pairs:
                    for g, t, c, k in zip(*(batch.column(i).to_pylist() for i in range(4))):
                        agree += k if same(g, t, c) else 0
        stats["teacher_agreement"] = round(agree / labelled, 4)
        stats["teacher_labelled"] = int(labelled)
    return stats


# ---------------------------------------------------------------------------------------------
# The export


def export(ws: Workspace, ref: str, out: str | Path, opts: ExportOptions | None = None) -> ExportResult:
    """Write `ref` as validated shards + manifest + dataset card into `out` (replacing a previous export there)."""
    opts = opts or ExportOptions()
    if opts.file_format not in FILE_FORMATS:
        raise SbsError(f"--shard-format must be one of {', '.join(FILE_FORMATS)}, not {opts.file_format!r}")
    if opts.label_source not in LABEL_SOURCES:
        raise SbsError(f"--label-source must be gold or teacher, not {opts.label_source!r}")
    if opts.rationale_source not in RATIONALE_SOURCES:
        raise SbsError(
            f"--rationale-source must be output or reasoning_summary, not {opts.rationale_source!r}"
        )
    if opts.max_rows_per_shard < 1:
        raise SbsError("--max-rows-per-shard must be at least 1")
    if opts.validation_fraction is not None and not 0 < opts.validation_fraction < 1:
        raise SbsError(
            f"--validation-fraction must be between 0 and 1 (exclusive), not {opts.validation_fraction}"
        )
    if not 1 <= opts.ngram <= 64 or not 0 < opts.threshold <= 1:
        raise SbsError("contamination n-gram must be 1..64 and threshold in (0, 1]")
    wanted = None
    if opts.splits:
        wanted = [normalize_split(s) for s in opts.splits]
        bad = [s for s in wanted if s not in SPLITS]
        if bad:
            raise SbsError(f"--splits: unknown split(s) {', '.join(bad)}; choose from {', '.join(SPLITS)}")
    out = _out_folder(out)
    _check_out(out)

    v = ws.get(ref)
    if v.kind == "examples" and opts.label_source == "teacher":
        raise SbsError(f"{v.ref} holds examples only (no teacher labels); use --label-source gold")
    # The rows live in a temp table for the whole export, so each step is a query that spills under the
    # cap, and the shards are written a row group at a time: memory does not grow with the version.
    with ws.tuned(memory_limit=_DUCKDB_MEMORY, preserve_insertion_order=False), ws.scratch(_ROWS, FLAGGED):
        manifest = _export_rows(ws, v, out, opts, wanted)
    result = ExportResult(out=out, manifest=manifest)
    _record(ws, v, result)
    return result


def _swap_in(tmp: Path, out: Path, sfx: str) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{sfx}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def folder_fingerprint(folder: Path) -> str:
    """sha256 over (path, sha256) of every file in an export folder: equal folders, equal fingerprints."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(folder).as_posix()}\0{_sha256(p)}\n".encode())
    return h.hexdigest()


def _record(ws: Workspace, v: Version, result: ExportResult) -> None:
    """Note the export in `sbs_exports` when the workspace is writable (exports work read-only too)."""
    if ws.read_only or not ws.one(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'sbs_exports'"
    ):
        return
    m = result.manifest
    with ws.transaction():
        ws.execute(
            "INSERT INTO sbs_exports (version_id, ref, path, file_format, label_source, options, rows, fingerprint) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                v.version_id,
                v.ref,
                str(result.out.resolve()),
                m["file_format"],
                m["label_source"],
                json.dumps(m["options"], sort_keys=True),
                m["totals"]["rows"],
                folder_fingerprint(result.out),
            ],
        )


def _export_rows(
    ws: Workspace, v: Version, out: Path, opts: ExportOptions, wanted: list[str] | None
) -> dict[str, Any]:
    """The export's steps on the rows in `_ROWS`; returns the manifest of the folder it swapped in."""
    loaded = _load_rows(ws, v, opts.rationale_source)
    if opts.rationale_source == "reasoning_summary" and not ws.one(
        f"SELECT count(teacher_reasoning) FROM {_ROWS}"
    ):
        raise SbsError(
            f"{v.ref} holds no reasoning summaries (generate with --reasoning-summary auto, an openai: reasoning "
            "model); use --rationale-source output"
        )
    present = _present(ws)
    if opts.validation_fraction is not None:
        if "validation" in present:
            raise SbsError(f"{v.ref} already has a validation split; drop --validation-fraction")
        if "train" not in present:
            raise SbsError(
                f"{v.ref}: --validation-fraction needs train rows to carve from, and there are none"
            )
        _carve(ws, opts.validation_fraction, opts.seed)
        present = _present(ws)
    keep_splits = wanted or [s for s in SPLITS if s in present]
    unknown = sorted(set(present) - set(SPLITS))
    unknown_kept = [s for s in unknown if wanted is None]
    if unknown_kept:
        raise SbsError(
            f"{v.ref}: split(s) {', '.join(unknown_kept)} are not train/validation/test; "
            "rename them at ingest or pick splits with --splits"
        )
    if not set(present) <= set(keep_splits):
        ws.execute(f"DELETE FROM {_ROWS} WHERE split NOT IN (SELECT unnest(?::VARCHAR[]))", [keep_splits])
    after_splits = _count(ws)

    cont = find_contamination(ws, _ROWS, ngram=opts.ngram, threshold=opts.threshold)
    dropped = 0
    if opts.drop_contaminated and cont.flagged_rows:
        ws.execute(
            f"DELETE FROM {_ROWS} USING {FLAGGED} f "
            f"WHERE {_ROWS}.example_id = f.example_id AND {_ROWS}.sample_idx = f.sample_idx"
        )
        dropped = cont.flagged_rows  # one flagged row per train row: each deletes exactly one
    exported = after_splits - dropped
    if exported == 0:
        raise SbsError(f"{v.ref}: no rows left to export (splits: {', '.join(keep_splits)})")
    if (
        v.kind != "examples"
        and opts.label_source == "gold"
        and not ws.one(f"SELECT count(gold_label) FROM {_ROWS}")
    ):
        # every training label would be null: the student's label task would learn nothing
        raise SbsError(
            f"{v.ref}: no exported row has a gold label (its examples were ingested without labels), so every "
            "training label would be empty; export with --label-source teacher to train on the teacher's labels"
        )

    totals = _totals(ws, v)
    task = v.task or ",".join(
        r[0] for r in ws.all(f"SELECT DISTINCT task FROM {_ROWS} WHERE task IS NOT NULL ORDER BY 1")
    )
    label_stats = _label_stats(ws, v.task)
    optional = tuple(c for c in OPTIONAL_COLUMNS if ws.one(f'SELECT count("{c}") FROM {_ROWS}'))
    schema = _out_schema(
        ws.arrow(f"SELECT quality FROM {_ROWS} LIMIT 0").schema.field("quality").type, optional
    )
    quality_stats = _quality_stats(ws, schema)
    per_split = {
        split: (int(n), int(ex), int(h or 0))
        for split, n, ex, h in ws.all(
            f"SELECT split, count(*), count(DISTINCT example_id), sum(hinted::BIGINT) FROM {_ROWS} GROUP BY 1"
        )
    }
    try:
        with _staging(out) as (tmp, sfx):
            split_info: dict[str, Any] = {}
            sizes: dict[str, dict[str, int]] = {}
            for split in SPLITS:
                if split not in keep_splits or split not in per_split:
                    continue
                shards, on_disk, in_arrow = _write_split(
                    ws,
                    split,
                    tmp,
                    file_format=opts.file_format,
                    max_rows=opts.max_rows_per_shard,
                    label_source=opts.label_source,
                    schema=schema,
                )
                n, examples, hinted = per_split[split]
                split_info[split] = {"rows": n, "examples": examples, "hinted": hinted, "shards": shards}
                sizes[split] = {"num_bytes": in_arrow, "download_size": on_disk}
            manifest: dict[str, Any] = {
                "format": "sbs-data-shards",
                "schema_version": SCHEMA_VERSION,
                "toolkit_version": __version__,
                "source": v.ref,
                "source_kind": v.kind,
                "source_created_at": v.created_at.isoformat(sep=" ", timespec="seconds"),
                "task": task,
                "label_source": opts.label_source,
                "file_format": opts.file_format,
                "columns": schema.names,
                "splits": split_info,
                "options": {
                    "splits": keep_splits,
                    "validation_fraction": opts.validation_fraction,
                    "seed": opts.seed if opts.validation_fraction is not None else None,
                    "max_rows_per_shard": opts.max_rows_per_shard,
                    "drop_contaminated": opts.drop_contaminated,
                    # named only when not the default, so a default export stays byte for byte as it was
                    **(
                        {"rationale_source": opts.rationale_source}
                        if opts.rationale_source != "output"
                        else {}
                    ),
                },
                "lineage": lineage(ws, v.ref),
                "totals": totals,
                "funnel": {
                    "source_rows": v.row_count,
                    "selection": _funnel(ws, v),
                    "loaded": loaded,
                    "outside_splits": loaded - after_splits,
                    "contaminated_dropped": dropped,
                    "exported": exported,
                },
                "contamination": cont.report(dropped),
            }
            validate(manifest, "manifest", where="manifest.json")
            (tmp / "manifest.json").write_text(
                json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            from sbs_data.export.card import build_card

            card = build_card(
                manifest,
                schema,
                sizes,
                quality_stats=quality_stats,
                label_stats=label_stats,
                license=opts.license,
                examples=_card_examples(ws, opts.label_source),
            )
            (tmp / "README.md").write_text(card, encoding="utf-8")
            _swap_in(tmp, out, sfx)
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise SbsError(f"--out {out}: cannot write the export: {e.strerror or e}{where}") from e
    return manifest
