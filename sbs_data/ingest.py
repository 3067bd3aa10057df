"""Load examples into the workspace: JSONL / CSV / parquet / HF datasets, and the paper's released layout.

Everything is read and validated before anything is written, and the write is one transaction, so bad
input leaves the workspace exactly as it was.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from sbs_data import SbsError
from sbs_data.tasks import FieldError, Task, get_task
from sbs_data.workspace import Version, Workspace, check_name

SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation"}
MAX_ERRORS_SHOWN = 5


def canonical_split(split: str) -> str:
    s = split.strip().lower()
    return SPLIT_ALIASES.get(s, s)


# ---------------------------------------------------------------------------------------------
# Readers yield (location, row) so every error can name file:line (or file:row N).


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open("rb") as fh:
        head = fh.read(1)
    if head == b"[":  # a JSON array file (e.g. SVAMP.json) is accepted too
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SbsError(f"{path}: not valid JSON: {e}") from e
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise SbsError(f"{path}: item {i}: expected a JSON object, got {type(row).__name__}")
            yield f"{path}:item {i}", row
        return
    with path.open("r", encoding="utf-8", errors="strict") as fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SbsError(f"{path}:{n}: malformed JSON line ({e.msg} at column {e.colno})") from e
                if not isinstance(row, dict):
                    raise SbsError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                yield f"{path}:{n}", row
        except UnicodeDecodeError as e:
            raise SbsError(f"{path}: not a UTF-8 text file, so not JSON Lines ({e.reason})") from e


def _read_csv(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        with path.open("r", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise SbsError(f"{path}: empty CSV file (no header row)")
            for row in reader:
                if None in row:
                    raise SbsError(f"{path}:{reader.line_num}: more cells than header columns")
                yield f"{path}:{reader.line_num}", _csv_values(row)
    except UnicodeDecodeError as e:
        raise SbsError(f"{path}: not a UTF-8 text file, so not CSV ({e.reason})") from e
    except csv.Error as e:
        raise SbsError(f"{path}: malformed CSV: {e}") from e


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


def _read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    with path.open("rb") as fh:
        if fh.read(4) != b"PAR1":
            raise SbsError(f"{path}: not a parquet file (missing PAR1 magic bytes)")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise SbsError(f"{path}: cannot read parquet: {e}") from e
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}:row {i}", row


def _read_hf(source: str, hf_split: str | None) -> Iterator[tuple[str, dict]]:
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
    for i, row in enumerate(ds):
        yield f"{source}:row {i}", row


def read_rows(source: str, hf_split: str | None = None) -> Iterator[tuple[str, dict]]:
    """Rows of any supported source, each with a location string for error messages."""
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


def build_examples(
    rows: Iterator[tuple[str, dict]] | list[tuple[str, dict]],
    task: Task,
    split: str,
    mapping: dict[str, str] | None = None,
    id_field: str | None = None,
    positional_ids: bool = False,
) -> pl.DataFrame:
    """Validate and canonicalise rows into sbs_examples columns; errors name location and field."""
    mapping = mapping or {}
    out: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    errors: list[str] = []
    for idx, (loc, raw) in enumerate(rows):
        row = dict(raw)
        for src, dst in mapping.items():
            if src in row:
                row[dst] = row.pop(src)
            elif idx == 0:
                raise SbsError(f"{loc}: --map {src}={dst}: no column {src!r} (columns: {sorted(raw)})")
        try:
            c = task.canonicalize(row)
            if id_field:
                if row.get(id_field) in (None, ""):
                    raise FieldError(id_field, "missing id (--id-field)")
                ex_id = str(row[id_field])
            elif positional_ids:
                ex_id = f"{split}-{idx:06d}"
            else:
                ex_id = c["id"] or content_id(task, c["fields"], c["choices"])
            text = task.render(c["fields"], c["choices"])
        except FieldError as e:
            errors.append(f"{loc}: {e}")
            if len(errors) >= MAX_ERRORS_SHOWN:
                break
            continue
        except (KeyError, IndexError, ValueError) as e:
            errors.append(f"{loc}: template error: {e}")
            break
        if ex_id in seen:
            errors.append(f"{loc}: duplicate example id {ex_id!r} (first seen at {seen[ex_id]})")
            if len(errors) >= MAX_ERRORS_SHOWN:
                break
            continue
        seen[ex_id] = loc
        out.append(
            {
                "example_id": ex_id,
                "split": split,
                "row_idx": idx,
                "task": task.name,
                "input_text": text,
                "label": c["label"],
                "choices": c["choices"],
                "fields": json.dumps(c["fields"], ensure_ascii=False),
                "source": json.dumps(raw, ensure_ascii=False, default=str),
            }
        )
    if errors:
        more = " (stopped after the first errors)" if len(errors) >= MAX_ERRORS_SHOWN else ""
        raise SbsError("bad input, nothing was stored:\n  " + "\n  ".join(errors) + more)
    if not out:
        raise SbsError("no rows to ingest (the source is empty)")
    return pl.DataFrame(
        out,
        schema={
            "example_id": pl.Utf8,
            "split": pl.Utf8,
            "row_idx": pl.Int32,
            "task": pl.Utf8,
            "input_text": pl.Utf8,
            "label": pl.Utf8,
            "choices": pl.List(pl.Utf8),
            "fields": pl.Utf8,
            "source": pl.Utf8,
        },
    )


def ingest(
    ws: Workspace,
    source: str,
    task: str,
    split: str,
    name: str | None = None,
    mapping: dict[str, str] | None = None,
    id_field: str | None = None,
    hf_split: str | None = None,
    note: str | None = None,
) -> Version:
    """Add (or replace) one split of a dataset: the new version holds the previous version's other splits."""
    t = get_task(task)
    split = canonical_split(split)
    dataset = check_name(name or Path(source.removeprefix("hf:")).stem.replace("/", "-"))
    df = build_examples(read_rows(source, hf_split), t, split, mapping, id_field)
    previous = ws.versions(dataset)
    parent = previous[-1] if previous else None
    if parent is not None and parent.kind != "examples":
        raise SbsError(f"dataset {dataset!r} holds {parent.kind}, not examples; choose another --name")
    if parent is not None and parent.task != t.name:
        raise SbsError(f"dataset {dataset!r} is task {parent.task!r}, not {t.name!r}")
    if parent is not None:
        others = dict(
            ws.all(
                "SELECT example_id, split FROM sbs_examples WHERE version_id = ? AND split <> ?",
                [parent.base_id, split],
            )
        )
        clash = next((i for i in df["example_id"] if i in others), None)
        if clash is not None:
            raise SbsError(
                f"{source}: duplicate example id {clash!r}: already in split {others[clash]!r} of "
                f"{parent.ref} (the same input in two splits would leak between them)"
            )
    config = {
        "op": "ingest",
        "source": str(source),
        "source_sha256": _file_hash(source),
        "split": split,
        "task": t.name,
        "task_def": t.to_dict(),
        "mapping": mapping or {},
        "id_field": id_field,
    }
    with ws.run(f"ingest {source} --task {task} --split {split}") as run:
        with ws.new_version(
            dataset, "examples", config, [parent] if parent else [], task=t.name, note=note, run_id=run.run_id
        ) as v:
            if parent is not None:
                ws.execute(
                    "INSERT INTO sbs_examples SELECT ? AS version_id, * EXCLUDE (version_id) FROM sbs_examples "
                    "WHERE version_id = ? AND split <> ?",
                    [v.version_id, parent.base_id, split],
                )
            ws.append("sbs_examples", v, df)
        run.stats.update(rows=len(df), version=ws.by_id(v.version_id).ref)
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
    warn: Callable[[str], None] = print,
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
                warn(
                    f"warning: skipping split {split}: gold file {gold.name} is missing ({len(chunks)} teacher file(s) found without it)"
                )
                skipped.append(split)
            continue
        df = build_examples(list(_read_jsonl(gold)), t, split, positional_ids=not _has_ids(gold, t))
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
            warn(
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
    with gold.open(encoding="utf-8") as fh:
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
