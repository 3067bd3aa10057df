"""The `sbs-data` command line: one verb per command, the same --db and --format options everywhere.

Each command is a thin shell over a Python function of the same name elsewhere in the package, so the
Python API mirrors the CLI.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

from sbs_data import SbsError, __version__
from sbs_data.output import FORMATS, emit
from sbs_data.workspace import Workspace, resolve_db_path

app = typer.Typer(
    name="sbs-data",
    help="Turn a teacher LLM into Distilling Step-by-Step training data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Shared options: every command takes --db, every command that prints data takes --format.
Db = Annotated[
    Path | None,
    typer.Option(
        "--db", help="Workspace DuckDB file (default: $SBS_DB, else ./sbs.duckdb).", show_default=False
    ),
]
Fmt = Annotated[str, typer.Option("--format", "-f", help=f"Output format: {'|'.join(FORMATS)}.")]


def _check_fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise SbsError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def friendly(fn: Callable) -> Callable:
    """Print user errors as one clear line (no traceback) and exit 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if "fmt" in kwargs:
                _check_fmt(kwargs["fmt"])
            return fn(*args, **kwargs)
        except SbsError as e:
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted; everything committed so far is kept.", err=True)
            raise typer.Exit(130) from None

    return wrapper


def info(msg: str) -> None:
    """Progress chatter goes to stderr so stdout stays clean for --format csv/json."""
    typer.echo(msg, err=True)


def parse_pairs(pairs: list[str] | None, opt: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise SbsError(f"{opt} {p!r}: expected KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


# ---------------------------------------------------------------------------------------------
# Workspace


@app.command()
@friendly
def init(db: Db = None) -> None:
    """Create (or migrate) a workspace file."""
    path = resolve_db_path(db)
    existed = path.exists()
    with Workspace.open(path) as ws:
        typer.echo(
            f"{'Opened' if existed else 'Created'} workspace {path} (schema version {ws.schema_version()})"
        )


@app.command()
@friendly
def versions(
    name: Annotated[str | None, typer.Argument(help="Dataset name; all datasets when omitted.")] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """List versions (NAME@N) with kind, rows and the hash of the config that made them."""
    with Workspace.open(db, read_only=True) as ws:
        if name and not ws.versions(name):
            raise SbsError(f"no dataset named {name!r}")
        emit([v.as_row() for v in ws.versions(name)], fmt)


@app.command()
@friendly
def log(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@N")], db: Db = None, fmt: Fmt = "table"
) -> None:
    """Show the lineage chain of a version: its parents, their parents, and what made each."""
    with Workspace.open(db, read_only=True) as ws:
        chain = ws.lineage(ref)
        rows = []
        for v in chain:
            row = v.as_row()
            row["parents"] = ", ".join(ws.by_id(p).ref for p in v.parents)
            row["config"] = _config_summary(v.config, 70 if fmt == "table" else 10_000)
            rows.append(row)
        emit(
            rows,
            fmt,
            columns=["ref", "kind", "task", "rows", "parents", "config_hash", "config", "created_at", "note"],
        )


def _config_summary(config: dict, width: int) -> str:
    keep = {k: v for k, v in config.items() if k not in ("task_def",)}
    s = json.dumps(keep, sort_keys=True, default=str)
    return s if len(s) <= width else s[: width - 3] + "..."


@app.command()
@friendly
def diff(a: str, b: str, db: Db = None, fmt: Fmt = "table") -> None:
    """Rows added / removed / changed between two versions."""
    with Workspace.open(db, read_only=True) as ws:
        d = ws.diff(a, b)
    if fmt == "table":
        emit([{k: d[k] for k in ("a", "b", "added", "removed", "changed", "unchanged")}], fmt)
        if d["examples"]:
            emit(d["examples"], fmt, title="first differences")
    elif fmt in ("json",):
        typer.echo(json.dumps(d, indent=2))
    else:
        emit([{k: d[k] for k in ("a", "b", "added", "removed", "changed", "unchanged")}], fmt)


@app.command()
@friendly
def note(ref: str, text: str, db: Db = None) -> None:
    """Attach a free-text note to a version (the only mutable field in the catalog)."""
    with Workspace.open(db) as ws:
        v = ws.set_note(ref, text)
    typer.echo(f"{v.ref}: {text}")


@app.command()
@friendly
def merge(
    refs: Annotated[list[str], typer.Argument(help="Two or more generation versions (NAME or NAME@N).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name of the merged version.")],
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Merge generation versions of the same examples (e.g. two teachers) into a new version."""
    from sbs_data.merge import merge as do_merge

    with Workspace.open(db) as ws:
        emit([do_merge(ws, refs, name).as_row()], fmt)


@app.command()
@friendly
def sql(
    query: Annotated[
        str, typer.Argument(help="SQL to run; the views examples, generations, versions... are there.")
    ],
    write: Annotated[
        bool, typer.Option("--write", help="Allow statements that change the workspace.")
    ] = False,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Run SQL on the workspace (read-only unless --write)."""
    import duckdb

    with Workspace.open(db, read_only=not write) as ws:
        try:
            cur = ws.con.execute(query)
        except duckdb.Error as e:
            msg = str(e)
            if not write and ("read-only" in msg.lower() or "read only" in msg.lower()):
                raise SbsError(
                    f"{msg}\n(the connection is read-only; pass --write to change the workspace)"
                ) from e
            raise SbsError(f"SQL error: {msg}") from e
        if cur.description is None:
            typer.echo("OK")
            return
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        emit(rows, fmt, columns=cols)


@app.command()
@friendly
def tables(db: Db = None, fmt: Fmt = "table") -> None:
    """List tables and views with row counts."""
    with Workspace.open(db, read_only=True) as ws:
        emit(ws.tables(), fmt)


# ---------------------------------------------------------------------------------------------
# Ingest


@app.command("tasks")
@friendly
def tasks_cmd(fmt: Fmt = "table") -> None:
    """List the built-in tasks."""
    from sbs_data.tasks import BUILTIN

    emit(
        [
            {
                "task": t.name,
                "fields": ", ".join(t.fields),
                "label_space": t.label_space,
                "description": t.description,
            }
            for t in BUILTIN.values()
        ],
        fmt,
    )


@app.command()
@friendly
def ingest(
    source: Annotated[
        str, typer.Argument(help="JSONL / CSV / parquet file, a datasets save_to_disk folder, or hf:NAME.")
    ],
    task: Annotated[str, typer.Option("--task", "-t", help="Built-in task name or a task YAML file.")],
    split: Annotated[
        str, typer.Option("--split", "-s", help="Split these rows belong to (train, validation, test...).")
    ],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Dataset name (default: the file stem).")
    ] = None,
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="Rename a source column: SRC=DST (repeatable).")
    ] = None,
    id_field: Annotated[
        str | None, typer.Option("--id-field", help="Column holding a stable example id.")
    ] = None,
    hf_split: Annotated[
        str | None, typer.Option("--hf-split", help="Split to read from a Hugging Face dataset.")
    ] = None,
    note_: Annotated[str | None, typer.Option("--note", help="Free note stored with the version.")] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Load examples into a new version of a dataset (all-or-nothing)."""
    from sbs_data.ingest import ingest as do_ingest

    with Workspace.open(db) as ws:
        v = do_ingest(
            ws,
            source,
            task=task,
            split=split,
            name=name,
            mapping=parse_pairs(map_, "--map"),
            id_field=id_field,
            hf_split=hf_split,
            note=note_,
        )
        emit([v.as_row()], fmt)


@app.command("import-original")
@friendly
def import_original(
    folder: Annotated[
        Path, typer.Argument(help="A dataset folder of the paper's release, e.g. datasets/cqa.")
    ],
    task: Annotated[str, typer.Option("--task", "-t", help="cqa | svamp | anli | esnli")],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Dataset name (default: the folder name).")
    ] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Import the paper's released gold data and raw PaLM-540B completions (NAME and NAME-palm)."""
    from sbs_data.ingest import import_original as do_import

    with Workspace.open(db) as ws:
        made = do_import(ws, folder, task=task, name=name, warn=info)
        emit([v.as_row() for v in made], fmt)


# ---------------------------------------------------------------------------------------------
# Generate (teachers, cache, batches)  -- commands below are registered by sbs_data.generate


# ---------------------------------------------------------------------------------------------
# Score / filter / report  -- quality commands


# ---------------------------------------------------------------------------------------------
# Export / push


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
