"""Load examples into the workspace: JSONL / CSV / parquet / HF datasets, and the paper's released layout.

Rows are read, validated and written in chunks, so memory stays flat at any file size; the new version stays
pending (invisible) until the last chunk is in, and bad input anywhere deletes it again, so the workspace
reads exactly as it was (see `Workspace.new_version(streamed=True)`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from sbs_data import SbsError, log
from sbs_data.tasks import BUILTIN, FieldError, Task, get_task
from sbs_data.text import storable_value
from sbs_data.workspace import Version, Workspace, check_name

SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation"}
MAX_ERRORS_SHOWN = 5
#: Rows validated and written at a time: bounds memory whatever the file size.
CHUNK_ROWS = 20_000
#: ... and at most about this many bytes of text (input, fields and source row) at a time, whatever the rows' size.
CHUNK_BYTES = 32 * 2**20
#: DuckDB's memory cap while ingesting: without it DuckDB caches the whole new version in memory.
MEMORY_LIMIT_BYTES = 256 * 2**20
#: The longest line of a JSON Lines / CSV file (one row): longer is no task input but a broken file.
MAX_LINE_BYTES = 8 * 2**20
#: The largest JSON array file, which is parsed whole (JSON Lines files are streamed).
MAX_JSON_ARRAY_BYTES = 64 * 2**20
_SCHEMA: dict[str, Any] = {
    "example_id": pl.Utf8,
    "split": pl.Utf8,
    "row_idx": pl.Int32,
    "task": pl.Utf8,
    "input_text": pl.Utf8,
    "label": pl.Utf8,
    "choices": pl.List(pl.Utf8),
    "fields": pl.Utf8,
    "source": pl.Utf8,
}


def canonical_split(split: str) -> str:
    s = split.strip().lower()
    return SPLIT_ALIASES.get(s, s)


# ---------------------------------------------------------------------------------------------
# Readers yield (position, row); `where(position)` names it in errors as file:line (or file:row N).


class Rows:
    """A source's rows, each with a position that `where` turns into file:line (or file:row N)."""

    def __init__(self, rows: Iterable[tuple[int, dict]], where: Callable[[int], str]):
        self.rows, self.where = rows, where

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        """(location, row) pairs, for callers that want the text."""
        return ((self.where(n), r) for n, r in self.rows)


def _lines(path: Path, fh: Any) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a binary file, each line read with a cap: a line over MAX_LINE_BYTES stops with
    an error naming it, after reading at most the cap (never the whole line into memory)."""
    cap = MAX_LINE_BYTES
    n = 0
    while raw := fh.readline(cap + 1):
        n += 1
        if len(raw) > cap and not (len(raw) == cap + 1 and raw.endswith(b"\n")):
            raise SbsError(
                f"{path}:{n}: line longer than {cap:,} bytes; no task input is that large (a file without "
                "line breaks, or a binary file?): split the row or fix the file"
            )
        yield n, raw


def _utf8_lines(path: Path, fh: Any, what: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a binary file, decoded line by line so a bad byte is reported with its line."""
    for n, raw in _lines(path, fh):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark (Excel's default)
            raw = raw[3:]
        try:
            yield n, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SbsError(
                f"{path}:{n}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}), so not {what}"
            ) from None


def _read_jsonl(path: Path) -> Rows:
    with path.open("rb") as fh:
        head = fh.read(8).removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"["):  # a JSON array file (e.g. SVAMP.json) is accepted too
        size = path.stat().st_size
        if size > MAX_JSON_ARRAY_BYTES:  # read whole: only small ones
            raise SbsError(
                f"{path}: a JSON array file of {size:,} bytes (at most {MAX_JSON_ARRAY_BYTES:,} are read whole); "
                "write it as JSON Lines (one object a line), which is read a chunk at a time"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SbsError(f"{path}: not valid JSON: {e}") from e

        def items() -> Iterator[tuple[int, dict]]:
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise SbsError(f"{path}: item {i}: expected a JSON object, got {type(row).__name__}")
                yield i, row

        return Rows(items(), lambda i: f"{path}:item {i}")

    def lines() -> Iterator[tuple[int, dict]]:
        with path.open("rb") as fh:
            for n, line in _utf8_lines(path, fh, "JSON Lines"):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SbsError(f"{path}:{n}: malformed JSON line ({e.msg} at column {e.colno})") from e
                if not isinstance(row, dict):
                    raise SbsError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                yield n, row

    return Rows(lines(), lambda n: f"{path}:{n}")


def _read_csv(path: Path) -> Rows:
    def rows() -> Iterator[tuple[int, dict]]:
        with path.open("rb") as fh:
            reader = csv.DictReader(line for _, line in _utf8_lines(path, fh, "CSV"))
            try:
                if not reader.fieldnames:
                    raise SbsError(f"{path}: empty CSV file (no header row)")
                for row in reader:
                    if None in row:
                        raise SbsError(f"{path}:{reader.line_num}: more cells than header columns")
                    yield reader.line_num, _csv_values(row)
            except csv.Error as e:
                raise SbsError(f"{path}:{reader.line_num}: malformed CSV: {e}") from e

    return Rows(rows(), lambda n: f"{path}:{n}")


def _csv_values(row: dict[str, str]) -> dict[str, Any]:
    """CSV cells are strings; a cell holding a JSON list (choices) is decoded."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, str) and v.startswith("[") and v.endswith("]"):
            try:
                out[k] = json.loads(v)
                continue
            except json.JSONDecodeError:
                pass
        out[k] = v
    return out


def _read_parquet(path: Path) -> Rows:
    import pyarrow.parquet as pq

    with path.open("rb") as fh:
        if fh.read(4) != b"PAR1":
            raise SbsError(f"{path}: not a parquet file (missing PAR1 magic bytes)")
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise SbsError(f"{path}: cannot read parquet: {e}") from e

    def rows() -> Iterator[tuple[int, dict]]:
        i = 0
        try:
            for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
                for row in batch.to_pylist():
                    yield i, row
                    i += 1
        except (OSError, ValueError) as e:
            raise SbsError(f"{path}: cannot read parquet at row {i}: {e}") from e

    return Rows(rows(), lambda i: f"{path}:row {i}")


def _read_hf(source: str, hf_split: str | None) -> Rows:
    import datasets

    path = Path(source)
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(source.removeprefix("hf:"))
    except Exception as e:
        raise SbsError(f"{source}: cannot load Hugging Face dataset: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        if not hf_split:
            raise SbsError(f"{source}: holds splits {list(ds)}; choose one with --hf-split")
        if hf_split not in ds:
            raise SbsError(f"{source}: no split {hf_split!r} (has {list(ds)})")
        ds = ds[hf_split]
    return Rows(enumerate(ds), lambda i: f"{source}:row {i}")


def read_rows(source: str, hf_split: str | None = None) -> Rows:
    """Rows of any supported source (streamed where the format allows), each with its position."""
    path = Path(source)
    if source.startswith("hf:") or path.is_dir():
        if (
            path.is_dir()
            and not (path / "dataset_info.json").exists()
            and not (path / "dataset_dict.json").exists()
        ):
            raise SbsError(f"{source}: a folder, but not a datasets `save_to_disk` folder")
        return _read_hf(source, hf_split)
    if not path.exists():
        raise SbsError(f"{source}: no such file")
    ext = path.suffix.lower()
    if ext in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path)
    if ext in (".csv",):
        return _read_csv(path)
    if ext in (".parquet", ".pq"):
        return _read_parquet(path)
    raise SbsError(f"{source}: unknown file type {ext!r}; use .jsonl, .json, .csv or .parquet")


# ---------------------------------------------------------------------------------------------


def content_id(task: Task, fields: dict[str, str], choices: list[str] | None) -> str:
    """A stable id from the input itself, so re-ingesting the same row gives the same id."""
    blob = json.dumps([task.name, fields, choices], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _id_text(value: Any, field: str) -> str:
    """An id cell as text; NaN, infinities, booleans and nested values are refused, never stringified."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(field, f"an id must be text or a number, not {type(value).__name__} {value!r:.60}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldError(field, f"an id must be text or a number, not {value!r}")
    return str(value)


#: Column names that usually hold a label (for the fix `ingest` suggests when the task's label field is absent).
_LABEL_NAMES = frozenset(
    [
        "label",
        "labels",
        "class",
        "category",
        "topic",
        "answer",
        "target",
        "gold",
        "y",
        "sentiment",
        "intent",
        "tag",
    ]
)


class _Checked:
    """Validates rows into sbs_examples chunks; collects the first errors, repaired-row and label counts.

    Rows come from one or more sources, each either of one split or with the split in a column
    (`split_field`); positions are kept per split, so an error after the fact still names file:line."""

    def __init__(
        self,
        task: Task,
        split: str | None,
        mapping: dict[str, str] | None,
        id_field: str | None,
        positional_ids: bool,
        split_field: str | None = None,
    ):
        self.task, self.split, self.mapping = task, split, mapping or {}
        self.id_field, self.positional_ids, self.split_field = id_field, positional_ids, split_field
        self.errors: list[str] = []
        self.repaired: list[int] = []  # row_idx of rows whose text had to be made storable
        #: per split: row_idx -> source position, for error messages after the fact
        self.positions: dict[str, array] = {}
        self.wheres: dict[str, Callable[[int], str]] = {}  # per split: its source's position namer
        self.rows = 0
        self.labelled = 0  # rows with a gold label
        self.columns: list[str] = []  # the first row's columns (after --map), for messages
        self.first_row: dict[str, Any] = {}  # ...and its values, to guess which column holds the label
        self.used = task.used_columns() | {c for c in (id_field, split_field) if c}

    def _id(self, row: dict[str, Any], c: dict[str, Any], idx: int, split: str) -> str:
        t = self.task
        if self.id_field:
            if row.get(self.id_field) in (None, ""):
                raise FieldError(self.id_field, "missing id (--id-field)")
            return _id_text(row[self.id_field], self.id_field)
        if self.positional_ids:
            return f"{split}-{idx:06d}"
        for f in t.id_fields:
            if row.get(f) not in (None, ""):
                return _id_text(row[f], f)
        return content_id(t, c["fields"], c["choices"])

    def _split_of(self, row: dict[str, Any], split: str | None) -> str:
        if split is not None:
            return split
        f = self.split_field
        assert f is not None
        v = row.get(f)
        if not isinstance(v, (str, int)) or isinstance(v, bool) or str(v).strip() == "":
            where = "" if f in row else f"; the row's columns: {', '.join(map(str, row))[:300]}"
            raise FieldError(f, f"missing split name (--split-field {f}), got {v!r:.60}{where}")
        name = canonical_split(str(v))
        check_split_name(name, f"field '{f}'")
        return name

    def where(self, split: str, idx: int) -> str:
        return self.wheres[split](self.positions[split][idx])

    def chunks(
        self, sources: Rows | list[tuple[Rows, str | None]], chunk_rows: int = CHUNK_ROWS
    ) -> Iterator[pl.DataFrame]:
        """Validated rows as DataFrames of at most `chunk_rows`; raises SbsError naming file:line and field.
        `sources`: one source of split `self.split`, or (source, split) pairs (split None: `split_field`)."""
        if isinstance(sources, Rows):
            sources = [(sources, self.split)]
        cols: dict[str, list[Any]] = {k: [] for k in _SCHEMA}
        size = 0  # characters of text in `cols`
        t = self.task
        counts: dict[str, int] = {}  # rows read per split: the next row_idx
        for source, fixed_split in sources:
            where = source.where
            for n, (pos, raw) in enumerate(source.rows):
                raw, fixed = storable_value(raw)
                row = dict(raw)
                for src, dst in self.mapping.items():
                    if src in row:
                        row[dst] = row.pop(src)
                    elif n == 0:
                        raise SbsError(
                            f"{where(pos)}: --map {src}={dst}: no column {src!r} (columns: {sorted(raw)})"
                        )
                if not self.columns:
                    self.columns = list(row)
                    self.first_row = row
                try:
                    split = self._split_of(row, fixed_split)
                    idx = counts.get(split, 0)
                    counts[split] = idx + 1
                    c = t.canonicalize(row)
                    ex_id = self._id(row, c, idx, split)
                    text = t.render(c["fields"], c["choices"])
                except FieldError as e:
                    self.errors.append(f"{where(pos)}: {e}")
                    if len(self.errors) >= MAX_ERRORS_SHOWN:
                        break
                    continue
                except (KeyError, IndexError, ValueError) as e:
                    self.errors.append(f"{where(pos)}: template error: {e}")
                    break
                if fixed:
                    self.repaired.append(idx)
                if split not in self.positions:
                    self.positions[split], self.wheres[split] = array("q"), where
                self.positions[split].append(pos)
                if self.errors:
                    continue  # nothing more will be written: only look for further errors
                # the columns the task does not read are kept beside its inputs
                extra = {k: v for k, v in row.items() if k not in self.used and k not in c["fields"]}
                fields = json.dumps({**c["fields"], **extra}, ensure_ascii=False, default=str)
                src = json.dumps(raw, ensure_ascii=False, default=str)
                for k, v in (
                    ("example_id", ex_id), ("split", split), ("row_idx", idx), ("task", t.name),
                    ("input_text", text), ("label", c["label"]), ("choices", c["choices"]),
                    ("fields", fields), ("source", src),
                ):  # fmt: skip
                    cols[k].append(v)
                self.rows += 1
                self.labelled += c["label"] is not None
                size += len(text) + len(fields) + len(src)
                if len(cols["example_id"]) >= chunk_rows or size >= CHUNK_BYTES:
                    yield pl.DataFrame(cols, schema=_SCHEMA)
                    cols, size = {k: [] for k in _SCHEMA}, 0
            if len(self.errors) >= MAX_ERRORS_SHOWN:
                break
        if self.errors:
            more = " (stopped after the first errors)" if len(self.errors) >= MAX_ERRORS_SHOWN else ""
            raise SbsError("bad input, nothing was stored:\n  " + "\n  ".join(self.errors) + more)
        if cols["example_id"]:
            yield pl.DataFrame(cols, schema=_SCHEMA)
        if not self.rows:
            raise SbsError("no rows to ingest (the source is empty)")

    def _label_guess(self, others: list[str]) -> str:
        """The column most likely to hold the label: one whose first value is in the task's fixed label space,
        else one named like a label, else the first the task does not read (a date column was suggested)."""
        t = self.task

        def fits(c: str) -> bool:
            v = self.first_row.get(c)
            ok = isinstance(v, (str, int)) and not isinstance(v, bool)
            return ok and t.label_space == "fixed" and t.in_label_space(str(v))

        named = [c for c in others if c.lower() in _LABEL_NAMES]
        return next((c for c in others if fits(c)), named[0] if named else others[0] if others else "COLUMN")

    def check_labels(self, what: str, no_labels: bool) -> None:
        """Refuse data in which no row has the task's label (unless `no_labels`); warn when some lack one."""
        t = self.task
        if no_labels or self.labelled == self.rows:
            return
        if self.labelled:
            log.warning(
                f"warning: {self.rows - self.labelled} of {self.rows} rows have no label (field "
                f"{t.label_field!r}): they are stored without one and `score`/`rationalize` skip them"
            )
            return
        others = [c for c in self.columns if c not in self.used or c == t.label_field]
        guess = self._label_guess(others)
        yaml_fix = (
            f"say which column holds the label in the task YAML (`label_field: {guess}`), or "
            if t.name not in BUILTIN
            else ""
        )
        raise SbsError(
            f"{what}: no row has the label field {t.label_field!r} of task {t.name!r}, so every row would be "
            f"stored without a gold label; columns present: {', '.join(self.columns)}. Fix: {yaml_fix}"
            f"rename the column with --map {guess}={t.label_field}; or, if the data has no labels, pass "
            "--no-labels. Nothing was stored."
        )

    def duplicate_error(
        self, dups: list[tuple[str, list[str], list[int]]], parent: Version | None
    ) -> SbsError:
        """The error for ids seen twice: (id, splits, row_idx) per id, new rows first (in split, row order),
        then the parent's kept splits."""
        lines = []
        for ex_id, splits, idxs in dups[:MAX_ERRORS_SHOWN]:
            new = [(s, i) for s, i in zip(splits, idxs) if s in self.positions]
            old = [s for s in splits if s not in self.positions]
            if len(new) >= 2:
                (s1, i1), (s2, i2) = new[0], new[1]
                first = self.where(s1, i1)
                if s1 == s2:
                    lines.append(
                        f"{self.where(s2, i2)}: duplicate example id {ex_id!r} (first seen at {first})"
                    )
                else:
                    lines.append(
                        f"{self.where(s2, i2)}: duplicate example id {ex_id!r}: also in split {s1!r} at {first} "
                        "(the same input in two splits would leak between them)"
                    )
            elif new and old:
                s, i = new[0]
                of = f" of {parent.ref}" if parent is not None else ""
                lines.append(
                    f"{self.where(s, i)}: duplicate example id {ex_id!r}: already in split {old[0]!r}{of} "
                    "(the same input in two splits would leak between them)"
                )
        return SbsError("bad input, nothing was stored:\n  " + "\n  ".join(lines))


def check_split_name(split: str, what: str) -> str:
    if not split or len(split) > 64 or any(ch.isspace() or ch in "=,'\"" for ch in split):
        raise SbsError(f"{what}: {split!r} is not a split name (a word such as train, validation or test)")
    return split


def build_examples(
    rows: Rows | Iterable[tuple[str, dict]],
    task: Task,
    split: str,
    mapping: dict[str, str] | None = None,
    id_field: str | None = None,
    positional_ids: bool = False,
) -> pl.DataFrame:
    """Validate and canonicalise a (small) source into one sbs_examples frame; errors name location and field."""
    if not isinstance(rows, Rows):
        listed = list(rows)
        rows = Rows(((i, r) for i, (_, r) in enumerate(listed)), lambda i: listed[i][0])
    checked = _Checked(task, split, mapping, id_field, positional_ids)
    df = pl.concat(list(checked.chunks(rows)))
    dups = (
        df.group_by("example_id", maintain_order=True)
        .agg(pl.col("split"), pl.col("row_idx"))
        .filter(pl.col("row_idx").list.len() > 1)
    )
    if len(dups):
        raise checked.duplicate_error(dups.rows(), None)
    return df


def ingest(
    ws: Workspace,
    source: str | None,
    task: str,
    split: str | None = None,
    name: str | None = None,
    mapping: dict[str, str] | None = None,
    id_field: str | None = None,
    hf_split: str | None = None,
    note: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    *,
    split_field: str | None = None,
    splits: dict[str, str] | None = None,
    no_labels: bool = False,
) -> Version:
    """Add (or replace) splits of a dataset: the new version holds the previous version's other splits.

    The rows come from `source` (all of split `split`, or each of the split its column `split_field` names),
    or from several files, `splits` = {split: file}: either way one new version. A task whose label field no
    row has is refused (the data would silently have no gold labels) unless `no_labels`; columns the task
    does not read are kept in `fields` beside its inputs.

    Rows stream from the sources in chunks into the version's transaction; any error rolls it all back.
    Texts that cannot be stored (lone surrogates, NULs) are repaired (U+FFFD, NUL removed), counted in the
    run's stats and reported as a warning (the `sbs_data` logger).
    """
    t = get_task(task)
    if splits:
        if source is not None or split is not None or split_field is not None:
            raise SbsError(
                "give the files as --split NAME=FILE pairs, or one FILE with --split or --split-field"
            )
        named: dict[str, str] = {}
        for s, f in splits.items():
            s = check_split_name(canonical_split(s), f"--split {s}={f}")
            if s in named:
                raise SbsError(f"--split {s}: given twice ({named[s]} and {f}); one file per split")
            named[s] = f
        sources: list[tuple[Rows, str | None]] = [(read_rows(f, hf_split), s) for s, f in named.items()]
        first = next(iter(named.values()))
        files = {s: {"source": str(f), "source_sha256": _file_hash(f)} for s, f in named.items()}
        config: dict[str, Any] = {"op": "ingest", "sources": files}
        label = " ".join(f"--split {s}={f}" for s, f in named.items())
        what = ", ".join(named.values())
    else:
        if source is None:
            raise SbsError(
                "nothing to ingest: give a FILE (with --split or --split-field), or --split NAME=FILE"
            )
        if split is not None and split_field is not None:
            raise SbsError(
                f"{source}: give --split NAME (every row in one split) or --split-field COLUMN (a column naming "
                "each row's split), not both"
            )
        if split is None and split_field is None:
            raise SbsError(
                f"{source}: say which split its rows belong to: --split NAME, or --split-field COLUMN "
                "(a column naming each row's split)"
            )
        if split is not None:
            split = check_split_name(canonical_split(split), "--split")
        sources = [(read_rows(source, hf_split), split)]
        first = what = source
        config = {"op": "ingest", "source": str(source), "source_sha256": _file_hash(source)}
        if split is not None:
            config["split"] = split
            label = f"{source} --split {split}"
        else:
            config["split_field"] = split_field
            label = f"{source} --split-field {split_field}"
    dataset = check_name(name or Path(first.removeprefix("hf:")).stem.replace("/", "-"))
    previous = ws.versions(dataset)
    parent = previous[-1] if previous else None
    if parent is not None and parent.kind != "examples":
        raise SbsError(f"dataset {dataset!r} holds {parent.kind}, not examples; choose another --name")
    if parent is not None and parent.task != t.name:
        raise SbsError(f"dataset {dataset!r} is task {parent.task!r}, not {t.name!r}")
    config.update(task=t.name, task_def=t.to_dict(), mapping=mapping or {}, id_field=id_field)
    if no_labels:
        config["no_labels"] = True
    checked = _Checked(t, split, mapping, id_field, positional_ids=False, split_field=split_field)
    with ws.run(f"ingest {label} --task {task}") as run, ws.tuned(MEMORY_LIMIT_BYTES):
        with ws.new_version(
            dataset,
            "examples",
            config,
            [parent] if parent else [],
            task=t.name,
            note=note,
            run_id=run.run_id,
            streamed=True,
        ) as v:
            for chunk in checked.chunks(sources, chunk_rows):
                ws.append("sbs_examples", v, chunk)
            checked.check_labels(what, no_labels)
            new = list(checked.positions)  # the splits read, in order
            if parent is not None:
                ws.execute(
                    "INSERT INTO sbs_examples SELECT ? AS version_id, * EXCLUDE (version_id) FROM sbs_examples "
                    "WHERE version_id = ? AND NOT list_contains(?::VARCHAR[], split)",
                    [v.version_id, parent.base_id, new],
                )
            # the new rows first, in the order their splits were read, then the parent's kept splits
            order = "coalesce(list_position(?::VARCHAR[], split), 1000000), split, row_idx"
            dups = ws.all(
                f"SELECT example_id, list(split ORDER BY {order}), list(row_idx ORDER BY {order}) "
                "FROM sbs_examples WHERE version_id = ? GROUP BY example_id HAVING count(*) > 1 "
                "ORDER BY min(row_idx) FILTER (WHERE list_contains(?::VARCHAR[], split)) LIMIT ?",
                [new, new, v.version_id, new, MAX_ERRORS_SHOWN],
            )
            if dups:
                raise checked.duplicate_error(dups, parent)
        run.stats.update(rows=checked.rows, version=f"{dataset}@{v.num}")
        if checked.repaired:
            run.stats.update(repaired_rows=len(checked.repaired), repaired_row_idx=checked.repaired[:100])
            log.warning(
                f"warning: {len(checked.repaired)} row(s) held text that cannot be stored (lone surrogates "
                "or NUL characters): stored with U+FFFD / NULs removed (row_idx in the run's stats)"
            )
    return ws.by_id(v.version_id)


def _file_hash(source: str) -> str | None:
    p = Path(source)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The paper's released layout: <ds>_{train,valid,test}.json + llm/<split>_CoT_<k>.json


ORIGINAL_SPLITS = (("train", "train"), ("valid", "validation"), ("test", "test"))
PALM_TEACHER = "palm-540b"


def _llm_chunks(folder: Path, file_split: str) -> list[Path]:
    chunks = []
    k = 0
    while (p := folder / "llm" / f"{file_split}_CoT_{k}.json").exists():
        chunks.append(p)
        k += 1
    return chunks


def _load_completions(chunks: list[Path]) -> list[Any]:
    out: list[Any] = []
    for p in chunks:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SbsError(f"{p}: not a JSON array of completions: {e}") from e
        if not isinstance(data, list):
            raise SbsError(f"{p}: expected a JSON array of completion strings, got {type(data).__name__}")
        for i, x in enumerate(data):
            if x is not None and not isinstance(x, str):
                raise SbsError(f"{p}: item {i}: expected a string completion, got {type(x).__name__}")
        out.extend(data)
    return out


def import_original(
    ws: Workspace,
    folder: str | Path,
    task: str,
    name: str | None = None,
) -> list[Version]:
    """Import gold examples (NAME) and the raw PaLM-540B completions (NAME-palm) in one transaction."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SbsError(f"{folder}: not a folder")
    t = get_task(task)
    ds = folder.name
    dataset = check_name(name or ds)
    frames, completions, skipped = [], {}, []
    for file_split, split in ORIGINAL_SPLITS:
        gold = folder / f"{ds}_{file_split}.json"
        chunks = _llm_chunks(folder, file_split)
        if not gold.exists():
            if chunks:
                log.warning(
                    f"warning: skipping split {split}: gold file {gold.name} is missing ({len(chunks)} teacher file(s) found without it)"
                )
                skipped.append(split)
            continue
        df = build_examples(_read_jsonl(gold), t, split, positional_ids=not _has_ids(gold, t))
        frames.append(df)
        if chunks:
            comps = _load_completions(chunks)
            if len(comps) != len(df):
                raise SbsError(
                    f"{folder}/llm/{file_split}_CoT_*.json: {len(comps)} completions for {len(df)} gold rows in "
                    f"{gold.name}; they must line up by position"
                )
            completions[split] = comps
        else:
            log.warning(
                f"warning: split {split}: no teacher completions (llm/{file_split}_CoT_*.json); examples only"
            )
    if not frames:
        raise SbsError(f"{folder}: no gold files named {ds}_{{train,valid,test}}.json")
    examples = pl.concat(frames)
    dups = examples.group_by("example_id").len().filter(pl.col("len") > 1)
    if len(dups):
        raise SbsError(f"{folder}: duplicate example id {dups['example_id'][0]!r} across splits")
    config = {
        "op": "import-original",
        "folder": str(folder.resolve()),
        "task": t.name,
        "task_def": t.to_dict(),
        "splits": [f.get_column("split")[0] for f in frames],
        "skipped": skipped,
    }
    made: list[Version] = []
    with ws.run(f"import-original {folder} --task {task}") as run:
        with ws.transaction():
            previous = ws.versions(dataset)
            with ws.new_version(
                dataset, "examples", config, previous[-1:], task=t.name, run_id=run.run_id
            ) as ev:
                ws.append("sbs_examples", ev, examples)
            ev = ws.by_id(ev.version_id)
            made.append(ev)
            if completions:
                gens = _palm_rows(t, examples, completions)
                gconfig = {
                    "op": "import-original",
                    "teacher": PALM_TEACHER,
                    "source": ev.ref,
                    "folder": config["folder"],
                }
                gname = check_name(f"{dataset}-palm")
                with ws.new_version(
                    gname, "generations", gconfig, [ev], task=t.name, run_id=run.run_id
                ) as gv:
                    ws.append("sbs_generations", gv, gens)
                made.append(ws.by_id(gv.version_id))
        run.stats.update({v.ref: v.row_count for v in made})
    return made


def _has_ids(gold: Path, task: Task) -> bool:
    with gold.open(encoding="utf-8-sig") as fh:
        first = fh.readline()
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return any(row.get(f) not in (None, "") for f in task.id_fields)


def _palm_rows(task: Task, examples: pl.DataFrame, completions: dict[str, list]) -> pl.DataFrame:
    out = []
    for split, comps in completions.items():
        part = examples.filter(pl.col("split") == split).sort("row_idx")
        for ex_id, choices, raw in zip(part["example_id"], part["choices"], comps):
            ch = list(choices) if choices is not None else None
            p = task.parse_completion(raw, ch)
            out.append(
                {
                    "example_id": ex_id,
                    "sample_idx": 0,
                    "split": split,
                    "teacher": PALM_TEACHER,
                    "raw": raw,
                    "rationale": p.rationale,
                    "pred_label": p.label,
                    "parse_status": p.status,
                }
            )
    return pl.DataFrame(out)
