"""The `sbs-data` command line: one verb per command, the same --db and --format options everywhere.

Each command is a thin shell over a Python function of the same name elsewhere in the package, so the
Python API mirrors the CLI.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import inspect
import json
import logging
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import duckdb
import typer

from sbs_data import SbsError, __version__
from sbs_data import log as library_log
from sbs_data.output import FORMATS, emit
from sbs_data.workspace import Workspace, corrupt_error, resolve_db_path, storage_error

if TYPE_CHECKING:
    from sbs_data.export.options import ExportOptions as LibExportOptions
    from sbs_data.generate.options import PlanSpec, RequestSpec, RunOptions


#: How `--help` names a value's type: click's words, not typer's `<str>`/`<bool>` tags.
_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "file": "FILE"}


def _plain_help_types() -> None:
    """typer (0.2x) prints a tag beside every option in `--help`: `<bool>` for a flag, `<str>`, `<list[str]>`,
    and `{ref}` for a required argument in the usage line. Flags need none and the rest read better as
    click's TEXT / INTEGER / PATH / a|b. The two display hooks are replaced; if typer renames them, help
    keeps typer's own tags (tests/test_cli.py notices)."""
    import typer.core as tc

    param_cls = getattr(tc, "_TyperParameter", None)
    arg_cls = getattr(tc, "TyperArgument", None)
    if param_cls is None or arg_cls is None or not hasattr(param_cls, "display_type"):
        return
    typer_display = param_cls.display_type

    def display_type(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        label = str(typer_display(self, ctx)).strip("<>")
        repeat = label.startswith("list[")
        if repeat:
            label = label[len("list[") : -1]
        label = _TYPE_WORDS.get(label, label)
        return f"{label} (repeatable)" if repeat else label

    def usage_name(self: Any) -> str:
        name = (self.metavar or self.name or "").upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    param_cls.display_type = display_type
    if hasattr(arg_cls, "_usage_display_name"):
        arg_cls._usage_display_name = usage_name


_plain_help_types()

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
    """Print user errors as one clear line (no traceback) and exit 1; `--db` may also come before the command."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if "db" in kwargs and kwargs["db"] is None:
                kwargs["db"] = _db_before_command()
            if "fmt" in kwargs:
                _check_fmt(kwargs["fmt"])
            return fn(*args, **kwargs)
        except SbsError as e:
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(1) from None
        except (KeyboardInterrupt, duckdb.InterruptException):  # Ctrl-C inside a DuckDB query says so
            typer.echo("Interrupted; everything committed so far is kept.", err=True)
            raise typer.Exit(130) from None
        except (duckdb.Error, OSError) as e:  # a damaged workspace file, a full disk
            bad = storage_error(e, kwargs.get("db") or resolve_db_path(None))
            if bad is None:
                raise
            typer.echo(f"Error: {bad}", err=True)
            raise typer.Exit(1) from None

    return wrapper


#: The --db given before the command (`sbs-data --db W versions`); set by the app callback on every call.
_APP_DB: contextvars.ContextVar[Path | None] = contextvars.ContextVar("sbs_app_db", default=None)


def _db_before_command() -> Path | None:
    return _APP_DB.get()


def options(group: type, param: str) -> Callable[[Callable], Callable]:
    """Give a command the options declared once as the fields of dataclass `group` (each annotated with its
    typer.Option, with its default), and hand the command one `group` instance as its parameter `param`.

    Like sqlite-utils' shared click option decorators: a field added to the group is an option of every
    command that uses it, declared and documented once.
    """
    hints = typing.get_type_hints(group, include_extras=True)
    fields = dataclasses.fields(group)
    for f in fields:  # `--help` shows each field under the PANEL of the class that declares it
        owner = next((c for c in group.__mro__ if f.name in vars(c).get("__annotations__", {})), group)
        panel = vars(owner).get("PANEL")
        metas = getattr(hints[f.name], "__metadata__", ())
        if panel and any(isinstance(m, typer.models.OptionInfo) and m.rich_help_panel is None for m in metas):
            # a copy: an alias such as BaseUrl is shared with commands outside this group
            placed = [copy.copy(m) if isinstance(m, typer.models.OptionInfo) else m for m in metas]
            for m in placed:
                if isinstance(m, typer.models.OptionInfo) and m.rich_help_panel is None:
                    m.rich_help_panel = panel
            args = (hints[f.name].__origin__, *placed)
            hints[f.name] = Annotated[args]

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)  # typer reads a set __signature__ as it is
        own = list(sig.parameters.values())
        at = [p.name for p in own].index(param)
        positional = own[at].kind is not inspect.Parameter.KEYWORD_ONLY
        added = [
            inspect.Parameter(
                f.name,
                own[at].kind,
                default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
                annotation=hints[f.name],
            )
            for f in fields
        ]
        clash = {f.name for f in fields} & {p.name for p in own}
        if clash:
            raise TypeError(f"{fn.__name__}: parameters {sorted(clash)} clash with {group.__name__}")
        # Required options first: Python signatures cannot put a default before a non-default.
        params = [*own[:at], *[p for p in added if p.default is inspect.Parameter.empty]]
        params += [p for p in added if p.default is not inspect.Parameter.empty] + own[at + 1 :]
        if positional and any(p.default is inspect.Parameter.empty for p in own[at + 1 :]):
            raise TypeError(f"{fn.__name__}: put {param!r} after the parameters without a default")

        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[param] = group(**{f.name: kwargs.pop(f.name) for f in fields})
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
        return wrapper

    return decorate


def info(msg: str) -> None:
    """Progress chatter goes to stderr so stdout stays clean for --format csv/json."""
    typer.echo(msg, err=True)


class _EchoHandler(logging.Handler):
    """The library's warnings (the `sbs_data` logger) as plain lines on stderr, as `info` prints them."""

    def emit(self, record: logging.LogRecord) -> None:
        info(record.getMessage())


def _print_library_messages() -> None:
    if not any(isinstance(h, _EchoHandler) for h in library_log.handlers):
        library_log.addHandler(_EchoHandler(logging.INFO))
        library_log.setLevel(logging.INFO)


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
    db: Db = None,
) -> None:
    """--db may come before the command too (`sbs-data --db W versions`); the command's own --db wins."""
    _APP_DB.set(db)
    _print_library_messages()
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
    """Run SQL on the workspace: queries only (no COPY TO, EXPORT, INSTALL, ATTACH, SET...) unless --write."""
    with Workspace.open(db, read_only=not write) as ws:
        if not write:
            ws.check_read_only(query)
            ws.sandbox()
        try:
            cols, result = ws.query(query)
        except duckdb.Error as e:
            msg = str(e)
            bad = corrupt_error(e, ws.path)
            if bad is not None:  # the file is damaged: no SQL of the user's could help
                raise bad from None
            if not write and ("read-only" in msg.lower() or "read only" in msg.lower()):
                raise SbsError(
                    f"{msg}\n(the connection is read-only; pass --write to change the workspace)"
                ) from e
            raise SbsError(f"SQL error: {msg}") from e
        if cols is None:
            typer.echo("OK")
            return
        emit([dict(zip(cols, r)) for r in result], fmt, columns=cols)


@app.command()
@friendly
def tables(
    all_: Annotated[
        bool, typer.Option("--all", help="Also list the sbs_* internals the views are built on.")
    ] = False,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """List the views to query (examples, generations, scores, versions, ...) with row counts."""
    with Workspace.open(db, read_only=True) as ws:
        rows = ws.tables(internal=all_)
        hidden = 0 if all_ else len(ws.tables()) - len(rows)
    emit(rows, fmt)
    if hidden:
        info(f"({hidden} sbs_* internal tables and views not listed; --all lists them)")


# ---------------------------------------------------------------------------------------------
# Show: rows to look at


@app.command()
@friendly
def show(
    ref: Annotated[str, typer.Argument(help="Version to show: NAME or NAME@N.")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to show (0 = all).")] = 10,
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            "-w",
            help="SQL condition over the rows' columns, e.g. \"NOT keep AND split = 'train'\".",
        ),
    ] = None,
    columns: Annotated[
        list[str] | None,
        typer.Option("--columns", "-c", help="Columns to show (repeat, or comma-separated; '*' = all)."),
    ] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Print the rows of a version to read: one block per row, long text wrapped.

    --format table (the default) prints blocks; csv, json and jsonl are for machines.
    Selections show every row with keep, the dropping rule's name and the rule."""
    from sbs_data.output import render_blocks
    from sbs_data.show import show as do_show

    _check_fmt(fmt)
    if limit < 0:
        raise SbsError("--limit must be 0 (all rows) or more")
    with Workspace.open(db, read_only=True) as ws:
        ws.sandbox()
        shown = do_show(ws, ref, limit=limit or None, where=where, columns=columns)
    if fmt != "table":
        emit(shown.rows, fmt, columns=shown.columns)
        return
    titles = [  # named by the row's key even when --columns leaves it out
        f"{shown.ref} · {k.get('example_id', '')}" + (f" #{k['sample_idx']}" if "sample_idx" in k else "")
        for k in shown.keys
    ]
    typer.echo(render_blocks(shown.rows, shown.columns, titles=titles))
    if shown.total > len(shown.rows):
        info(f"{len(shown.rows)} of {shown.total} rows (--limit 0 shows all)")


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
    task: Annotated[str, typer.Option("--task", "-t", help="Built-in task name or a task YAML file.")],
    source: Annotated[
        str | None,
        typer.Argument(
            help="JSONL / CSV / parquet file, a datasets save_to_disk folder, or hf:NAME "
            "(none with --split NAME=FILE).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split",
            "-s",
            help="Split of FILE's rows (train, validation, test...), or NAME=FILE, repeatable: several files, "
            "one version.",
            show_default=False,
        ),
    ] = None,
    split_field: Annotated[
        str | None,
        typer.Option("--split-field", help="Column of FILE naming each row's split.", show_default=False),
    ] = None,
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
    no_labels: Annotated[
        bool,
        typer.Option(
            "--no-labels",
            help="The data has no gold labels: store it without (else refused when no row has one).",
        ),
    ] = False,
    note_: Annotated[str | None, typer.Option("--note", help="Free note stored with the version.")] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Load examples into a new version of a dataset (all-or-nothing).

    One FILE with --split or --split-field, or several files with --split NAME=FILE."""
    from sbs_data.ingest import ingest as do_ingest

    pairs = [s for s in split or [] if "=" in s]
    plain = [s for s in split or [] if "=" not in s]
    if pairs and (plain or source is not None):
        raise SbsError(
            "give either FILE with --split NAME (or --split-field COLUMN), or only --split NAME=FILE pairs"
        )
    if len(plain) > 1:
        raise SbsError(
            f"--split given {len(plain)} times for one FILE; use --split NAME=FILE for several files"
        )
    files: dict[str, str] = {}
    for pair in pairs:
        k, _, f = pair.partition("=")
        if not k.strip() or not f.strip():
            raise SbsError(f"--split {pair!r}: expected NAME=FILE")
        if k.strip() in files:
            raise SbsError(f"--split {k.strip()}: given twice; one file per split")
        files[k.strip()] = f.strip()
    with Workspace.open(db) as ws:
        v = do_ingest(
            ws,
            source,
            task=task,
            split=plain[0] if plain else None,
            name=name,
            mapping=parse_pairs(map_, "--map"),
            id_field=id_field,
            hf_split=hf_split,
            note=note_,
            split_field=split_field,
            splits=files or None,
            no_labels=no_labels,
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
        made = do_import(ws, folder, task=task, name=name)
        emit([v.as_row() for v in made], fmt)


# ---------------------------------------------------------------------------------------------
# Generate (teachers, cache, batches)  -- commands below are registered by sbs_data.generate

Teacher = Annotated[
    str,
    typer.Option(
        "--teacher",
        "-T",
        help="openai:MODEL | anthropic:MODEL | gemini:MODEL | openai-compat:MODEL (with --base-url) | hf:NAME_OR_PATH "
        "| replay:NAME@N",
    ),
]
BaseUrl = Annotated[
    list[str] | None,
    typer.Option("--base-url", help="API base URL; repeat to spread load over replicas (openai-compat)."),
]


#: `sbs-data models --format table`: list_models' columns under short headings, one table per provider.
_MODEL_HEADINGS = {
    "model": "model",
    "input": "in",
    "cached_input": "cached",
    "cache_write_5m": "write 5m",
    "cache_write_1h": "write 1h",
    "output": "out",
    "batch_discount": "batch",
    "reasoning": "reasons",
    "max_output_tokens": "max out",
    "default_max_tokens": "budget",
    "min_cache_tokens": "min cache",
    "params": "params",
    "native_json": "--json",
}


@app.command()
@friendly
def models(
    provider: Annotated[
        str | None,
        typer.Option("--provider", "-p", help="Only this provider's models (openai, anthropic...)."),
    ] = None,
    prices: Annotated[
        Path | None, typer.Option("--prices", help="Model table to list instead of recipes/prices.yaml.")
    ] = None,
    fmt: Fmt = "table",
) -> None:
    """List the models table: prices (USD per 1M tokens), batch discount, reasoning, limits, what each accepts."""
    from sbs_data.teachers.models import MODEL_COLUMNS, list_models

    rows = list_models(provider, prices)
    if fmt == "csv":
        emit([{**r, "params": " ".join(r["params"])} for r in rows], fmt, columns=list(MODEL_COLUMNS))
        return
    if fmt != "table":
        emit(rows, fmt, columns=list(MODEL_COLUMNS))
        return
    if not rows:
        info("no models listed")
    for name in dict.fromkeys(r["provider"] for r in rows):
        shown = [
            {
                _MODEL_HEADINGS[k]: v
                for k, v in {
                    **r,
                    "reasoning": "yes" if r["reasoning"] else "",
                    "params": " ".join(r["params"]),
                    "native_json": "native" if r["native_json"] else "prompt",
                }.items()
                if k in _MODEL_HEADINGS
            }
            for r in rows
            if r["provider"] == name
        ]
        emit(shown, fmt, title=f"{name}: USD per 1M tokens; batch = price multiplier for batch calls")


@dataclass
class TeacherOptions:
    """Which teacher, prompt and sampling parameters: every field is a request ingredient (part of the key).

    Shared by `generate`, `cache explain` (through PlanOptions) and `rationalize`."""

    PANEL: ClassVar[str] = "Teacher, prompt and sampling"
    teacher: Teacher
    base_url: BaseUrl = None
    prompt: Annotated[
        Path | None,
        typer.Option(
            "--prompt",
            help="Prompt template file (.yaml or .txt with {input}). Default: the task's built-in prompt, else "
            "a zero-shot one (rationalize: the prompt GEN was generated with).",
        ),
    ] = None
    json_mode: Annotated[
        bool, typer.Option("--json", help="Ask for {rationale, label} JSON and validate it.")
    ] = False
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Default 0 (0.7 with --samples > 1).")
    ] = None
    top_p: Annotated[float | None, typer.Option("--top-p")] = None
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help="Completion token limit (default 256; reasoning models: the model table's budget).",
        ),
    ] = None
    seed: Annotated[
        int | None, typer.Option("--seed", help="Sampling seed, where the provider supports one.")
    ] = None
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop sequence (repeatable).")] = None
    reasoning_effort: Annotated[
        str | None,
        typer.Option(
            "--reasoning-effort",
            help="Reasoning models (OpenAI o-series, gpt-5; Gemini thinking models): minimal, low, medium or high.",
        ),
    ] = None
    thinking_budget: Annotated[
        int | None,
        typer.Option(
            "--thinking-budget",
            help="Gemini thinking models: tokens to think (0 off where the model allows it, -1 dynamic).",
        ),
    ] = None
    reasoning_summary: Annotated[
        str | None,
        typer.Option(
            "--reasoning-summary",
            help="openai: reasoning models (Responses API): also ask for a summary of the reasoning "
            "(auto, concise or detailed), stored per row as teacher_reasoning.",
        ),
    ] = None
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            help="openai:/openai-compat: API: chat or responses (default: responses for reasoning models, "
            "chat otherwise).",
        ),
    ] = None
    prices: Annotated[
        Path | None,
        typer.Option(
            "--prices", help="Model table (prices, limits, parameters) instead of recipes/prices.yaml."
        ),
    ] = None

    def params(self) -> dict[str, Any]:
        """Sampling parameters, as `RequestSpec.params` holds them."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop) if self.stop else None,
            "reasoning_effort": self.reasoning_effort,
            "reasoning_summary": self.reasoning_summary,
            "thinking_budget": self.thinking_budget,
        }

    def spec(self) -> RequestSpec:
        """The library's `RequestSpec`, field for field."""
        from sbs_data.generate.options import RequestSpec

        return RequestSpec(
            self.teacher,
            prompt_path=self.prompt,
            json_mode=self.json_mode,
            params=self.params(),
            base_urls=tuple(self.base_url or ()),
            prices_path=self.prices,
            api=self.api,
        )


@dataclass
class PlanOptions(TeacherOptions):
    """What `generate` asks, and so what `cache explain` must ask too: every field is a request ingredient.

    Add an option here (a field annotated with its typer.Option) and both commands take it.
    """

    PANEL: ClassVar[str] = "Which rows"
    split: Annotated[str | None, typer.Option("--split", "-s", help="Only this split.")] = None
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N examples (in split, row order).")
    ] = None
    samples: Annotated[
        int, typer.Option("--samples", "-k", help="Completions per example (each its own cache key).")
    ] = 1

    def spec(self) -> PlanSpec:
        """The library's `PlanSpec`, field for field."""
        from sbs_data.generate.options import PlanSpec

        return PlanSpec(**vars(super().spec()), split=self.split, limit=self.limit, samples=self.samples)


_RUN_PANEL = "Run: budget, mode, dry run"
_CACHE_PANEL = "Provider prompt cache"


@dataclass
class CallOptions:
    """How a command calls its teacher (limits, retries, budget, dry run, offline, batch): `generate` and
    `rationalize` go through the same engine, so they take the same options."""

    PANEL: ClassVar[str] = "Limits and retries"
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Requests in flight at most.")] = 64
    rpm: Annotated[float | None, typer.Option("--rpm", help="Requests per minute at most.")] = None
    tpm: Annotated[
        float | None, typer.Option("--tpm", help="Tokens per minute at most (estimated up front).")
    ] = None
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Render prompts, count requests, tokens and cost; call nothing.",
            rich_help_panel=_RUN_PANEL,
        ),
    ] = False
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Never call the network; fail on a cache miss.", rich_help_panel=_RUN_PANEL
        ),
    ] = False
    max_usd: Annotated[
        float | None,
        typer.Option("--max-usd", help="Stop cleanly once this much is spent.", rich_help_panel=_RUN_PANEL),
    ] = None
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per request.")] = 60.0
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", help="Tries per request for retryable errors.")
    ] = 6
    backoff: Annotated[
        float, typer.Option("--backoff", help="First retry delay in seconds (doubles, jittered).")
    ] = 0.5
    max_wait: Annotated[
        float,
        typer.Option("--max-wait", help="Longest single wait on the provider in seconds (caps Retry-After)."),
    ] = 120.0
    patience: Annotated[
        float,
        typer.Option(
            "--patience",
            help="Rate-limited with no answer at all for this many seconds: fail the waiting rows.",
        ),
    ] = 600.0
    prompt_cache: Annotated[
        bool,
        typer.Option(
            "--prompt-cache/--no-prompt-cache",
            help="Mark the shared few-shot prefix for Anthropic's prompt cache (OpenAI, Gemini cache by themselves).",
            rich_help_panel=_CACHE_PANEL,
        ),
    ] = True
    cache_ttl: Annotated[
        str | None,
        typer.Option(
            "--cache-ttl",
            help="Lifetime of Anthropic's prompt-cache marks: 5m or 1h (writes cost 1.25x / 2x input; "
            "default 5m online, 1h with --mode batch). Not part of the request cache key.",
            rich_help_panel=_CACHE_PANEL,
        ),
    ] = None
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar (default: on a terminal).",
            rich_help_panel=_RUN_PANEL,
        ),
    ] = None
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="online, or batch (openai:/anthropic:/gemini: batch APIs at the batch price; see `batches`).",
            rich_help_panel=_RUN_PANEL,
        ),
    ] = "online"
    max_rounds: Annotated[
        int,
        typer.Option(
            "--max-rounds",
            help="Batch mode: submissions per request (failed/expired re-sent).",
            rich_help_panel=_RUN_PANEL,
        ),
    ] = 3
    service_tier: Annotated[
        str | None,
        typer.Option(
            "--service-tier",
            help="openai: auto, default, flex (cheaper, slower; busy answers are waited out) or priority; "
            "the tier each answer reports is stored and priced.",
            rich_help_panel=_RUN_PANEL,
        ),
    ] = None

    def run_options(self, command: str) -> RunOptions:
        """The library's `RunOptions` (its `Settings` and `BatchSettings` from these flags)."""
        from sbs_data.generate.batches import BatchSettings
        from sbs_data.generate.options import RunOptions
        from sbs_data.generate.run import Settings

        settings = Settings(
            concurrency=self.concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            max_attempts=self.max_attempts,
            backoff_base=self.backoff,
            backoff_max=max(60.0, self.backoff),
            timeout=self.timeout,
            max_wait=self.max_wait,
            patience=self.patience,
            progress=self.progress,
        )
        return RunOptions(
            settings=settings,
            mode=self.mode,
            max_usd=self.max_usd,
            dry_run=self.dry_run,
            offline=self.offline,
            prompt_cache=self.prompt_cache,
            service_tier=self.service_tier,
            cache_ttl=self.cache_ttl,
            batch=BatchSettings(max_rounds=self.max_rounds),
            command=" ".join([command, *sys.argv[2:]]) if len(sys.argv) > 1 else command,
        )


#: Exit status of a run that stopped before every row was answered (budget, patience, the same error on every
#: first request...): its rows are in NAME-partial, and scripts can tell it from a complete run (0).
EXIT_STOPPED = 3


def _split_line(n: dict[str, int]) -> str:
    """ "20 rows: 18 ok, 17 in the label space, 12 agree with gold" (the gold part when there is gold)."""
    line = f"{n['rows']} rows: {n['ok']} ok, {n['in_label_space']} in the label space"
    if n["gold"]:
        line += f", {n['agree_gold']} agree with gold"
        if n["gold"] < n["rows"]:
            line += f" (of {n['gold']} with gold)"
    return line


def _show_run(res: Any, fmt: str) -> None:
    """A generate-style result: the first request of a dry run, a stop note, then the summary; a run that
    stopped early exits with EXIT_STOPPED once the summary is out."""
    if res.dry_run and res.preview and fmt == "table":
        system, user = res.preview
        info(f"--- first request ({res.summary['prompt']}) ---")
        if system:
            info(f"[system]\n{system}")
        info(f"[user]\n{user if len(user) < 4000 else user[:1500] + ' ... ' + user[-1500:]}\n---")
    if res.summary.get("stopped"):
        info(f"Stopped: {res.summary['stopped']}; what arrived is committed, rerun to resume.")
    if fmt == "table":  # one wide row reads badly in a terminal: show it as field / value
        rows = []
        for k, v in res.summary.items():
            if k == "by_split":  # one line per split: what the answers are worth
                rows += [{"field": f"split {sp}", "value": _split_line(n)} for sp, n in v.items()]
            else:
                rows.append({"field": k, "value": "" if v is None else v})
        emit(rows, fmt)
    else:
        emit([res.summary], fmt)
    if res.summary.get("stopped"):
        raise typer.Exit(EXIT_STOPPED)


@app.command()
@friendly
@options(PlanOptions, "plan")
@options(CallOptions, "call")
def generate(
    ref: Annotated[str, typer.Argument(help="Examples version to answer: NAME or NAME@N.")],
    plan: PlanOptions,
    call: CallOptions,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Output dataset (default NAME-<model>).")
    ] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Answer an examples version with a teacher LLM -> a new generation version (cached, resumable).

    Example: sbs-data generate cqa --teacher openai:gpt-4o-mini --json --samples 2 --max-usd 5 --dry-run
    """
    from sbs_data.generate.run import generate as do_generate

    with Workspace.open(db) as ws:
        res = do_generate(ws, ref, plan.spec(), call.run_options("generate"), name=name)
    _show_run(res, fmt)


@app.command()
@friendly
@options(TeacherOptions, "teach")
@options(CallOptions, "call")
def rationalize(
    ref: Annotated[
        str, typer.Argument(help="Generations version whose wrong/failed rows to ask again: GEN or GEN@N.")
    ],
    teach: TeacherOptions,
    call: CallOptions,
    rows: Annotated[
        str, typer.Option("--rows", help="Rows to ask again: wrong | failed | wrong+failed.")
    ] = "wrong+failed",
    split: Annotated[
        list[str] | None,
        typer.Option("--split", "-s", help="Split to rationalize (repeatable; default train)."),
    ] = None,
    allow_eval_splits: Annotated[
        bool,
        typer.Option(
            "--allow-eval-splits",
            help="Allow validation/test in --split (their gold answer goes into prompts).",
        ),
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Dataset of the hinted answers (default GEN-hinted).")
    ] = None,
    combine: Annotated[
        bool,
        typer.Option("--combine/--no-combine", help="Also build the combined version to train on (default)."),
    ] = True,
    combined_name: Annotated[
        str | None,
        typer.Option("--combined-name", help="Dataset of the combined version (default GEN-rationalized)."),
    ] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Ask the teacher again, the gold answer as a hint, for GEN's wrong or failed train rows (STaR).

    Builds GEN-rationalized: every row of GEN, recovered rows replaced by hinted answers."""
    from sbs_data.generate.options import RationalizeSelect
    from sbs_data.generate.rationalize import rationalize as do_rationalize

    select = RationalizeSelect(rows, split, allow_eval_splits, name, combine, combined_name)
    with Workspace.open(db) as ws:
        res = do_rationalize(ws, ref, teach.spec(), call.run_options("rationalize"), select)
    _show_run(res, fmt)


# ---------------------------------------------------------------------------------------------
# Prompts: `prompt init` writes a few-shot prompt file for a task from its labelled rows

prompt_app = typer.Typer(help="Few-shot prompts for your own tasks.", no_args_is_help=True)
app.add_typer(prompt_app, name="prompt")


@prompt_app.command("init")
@friendly
@options(CallOptions, "call")
def prompt_init_cmd(
    task: Annotated[str, typer.Argument(help="Built-in task name or a task YAML file.")],
    source: Annotated[
        str,
        typer.Option("--from", help="Examples version to take labelled exemplars from: NAME or NAME@N."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The prompt file to write (.yaml).")],
    call: CallOptions,
    shots: Annotated[int, typer.Option("--shots", "-k", help="Exemplars, picked across the labels.")] = 6,
    seed: Annotated[
        int, typer.Option("--seed", help="Which rows are picked (the same seed, the same file).")
    ] = 0,
    split: Annotated[str, typer.Option("--split", "-s", help="Split to take exemplars from.")] = "train",
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            "-T",
            help="Have this teacher write each exemplar's rationale, given the gold answer (cached and costed "
            "like generate's calls); without it the rationales are TODO placeholders.",
            show_default=False,
        ),
    ] = None,
    base_url: BaseUrl = None,
    json_mode: Annotated[
        bool, typer.Option("--json", help="Ask the teacher for {rationale, label} JSON.")
    ] = False,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Completion token limit.")] = None,
    prices: Annotated[
        Path | None, typer.Option("--prices", help="Model table instead of recipes/prices.yaml.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Write a few-shot prompt file for TASK from labelled rows of an examples version; use it with
    `generate --prompt FILE`."""
    from sbs_data.generate.options import RequestSpec
    from sbs_data.generate.prompt_init import prompt_init

    spec = run = None
    if teacher is not None:
        params = {"max_tokens": max_tokens}
        spec = RequestSpec(teacher, json_mode=json_mode, params=params, base_urls=tuple(base_url or ()),
                           prices_path=prices)  # fmt: skip
        run = call.run_options("prompt")  # its command: "prompt" + the arguments after it
    with Workspace.open(db) as ws:
        res = prompt_init(
            ws, task, source, out, shots=shots, seed=seed, split=split, force=force, teacher=spec, run=run
        )
    info(f"wrote {res.path}: {len(res.picked)} exemplars, {res.written} rationale(s) written by a teacher")
    if fmt == "table":
        emit([{"field": k, "value": "" if v is None else v} for k, v in res.summary.items()], fmt)
    else:
        emit([res.summary], fmt)


cache_app = typer.Typer(help="The request cache: stats, and why a request missed.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
@friendly
def cache_stats(db: Db = None, fmt: Fmt = "table") -> None:
    """Cached answers, tokens, cost and open failures per provider/model."""
    from sbs_data.generate.cache import stats

    with Workspace.open(db, read_only=True) as ws:
        emit(stats(ws), fmt)


@cache_app.command("explain")
@friendly
@options(PlanOptions, "plan")
def cache_explain(
    ref: Annotated[str, typer.Argument(help="Examples version, as given to generate.")],
    plan: PlanOptions,
    rows: Annotated[int, typer.Option("--rows", help="Explain at most this many requests.")] = 20,
    all_: Annotated[bool, typer.Option("--all", help="Show hits too, not only misses.")] = False,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """For the requests `generate` would make with these options: hit, or which key ingredient differs."""
    from sbs_data.generate.run import explain

    with Workspace.open(db, read_only=True) as ws:
        out = explain(ws, ref, plan.spec(), limit_rows=rows, only_misses=not all_)
    if not out and fmt == "table":
        info("every request is cached")
    emit(out, fmt, columns=["example_id", "sample_idx", "key", "status", "reason"])


batches_app = typer.Typer(
    help="Batch runs (generate --mode batch): status, wait, collect, cancel. RUN: run id, prefix or output name.",
    no_args_is_help=True,
)
app.add_typer(batches_app, name="batches")
RunArg = Annotated[
    str | None,
    typer.Argument(help="Run id (or a unique prefix, or the output name); default: every open run."),
]


@batches_app.command("status")
@friendly
def batches_status(
    run: RunArg = None,
    no_poll: Annotated[
        bool, typer.Option("--no-poll", help="Show what is recorded; ask the provider nothing.")
    ] = False,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Every job of the run(s), refreshed from the provider (submits and downloads nothing)."""
    from sbs_data.generate.batches import status

    with Workspace.open(db, read_only=no_poll) as ws:
        rows = status(ws, run, poll=not no_poll)
    if not rows and fmt == "table":
        info("no batch runs")
    emit(
        rows,
        fmt,
        columns=None
        if fmt != "table"
        else [
            "run_id",
            "job_id",
            "round",
            "state",
            "provider_status",
            "n_requests",
            "n_succeeded",
            "n_errored",
            "n_expired",
            "n_canceled",
            "error",
        ],
    )


@batches_app.command("wait")
@friendly
def batches_wait(
    run: RunArg = None,
    poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between polls.")] = 30.0,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up waiting after this many seconds.")
    ] = None,
    collect_: Annotated[
        bool,
        typer.Option(
            "--collect/--no-collect", help="Collect and re-submit on the way (default) or only wait."
        ),
    ] = True,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress")] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Block (with a progress display) until the run(s) are finished; the generation version is built."""
    from sbs_data.generate.batches import BatchSettings, wait

    s = BatchSettings(poll_interval=poll_interval, progress=progress)
    with Workspace.open(db) as ws:
        out = wait(ws, run, settings=s, collect_results=collect_, timeout=timeout)
    emit(out, fmt)


@batches_app.command("collect")
@friendly
def batches_collect(run: RunArg = None, db: Db = None, fmt: Fmt = "table") -> None:
    """Fetch ended jobs into the cache, re-submit failed/expired requests, build finished versions (idempotent)."""
    from sbs_data.generate.batches import collect

    with Workspace.open(db) as ws:
        out = collect(ws, run)
    for r in out:
        if r["state"] != "done":
            info(f"{r['run']}: {r['open_jobs']} job(s) still running; collect again later or `batches wait`")
    emit(out, fmt)


@batches_app.command("cancel")
@friendly
def batches_cancel(run: RunArg = None, db: Db = None, fmt: Fmt = "table") -> None:
    """Cancel the run's open jobs at the provider; `collect` then keeps what was answered (partial version)."""
    from sbs_data.generate.batches import cancel

    with Workspace.open(db) as ws:
        out = cancel(ws, run)
    info("cancel requested; run `sbs-data batches collect` to keep the answers that arrived")
    emit(out, fmt)


# ---------------------------------------------------------------------------------------------
# Score / filter / report  -- quality commands


@dataclass
class JudgeOptions:
    """`score --judge`: the teacher that grades each rationale and how it is called (declared once)."""

    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="Also have this teacher grade each rationale 1-5 (judge_score); same specs as generate.",
        ),
    ] = None
    judge_prompt: Annotated[
        Path | None, typer.Option("--judge-prompt", help="Judge prompt file (default recipes/judge.yaml).")
    ] = None
    base_url: BaseUrl = None
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Judge requests in flight.")] = 16
    rpm: Annotated[float | None, typer.Option("--rpm", help="Judge requests per minute at most.")] = None
    offline: Annotated[bool, typer.Option("--offline", help="Judge from the cache only; fail on a miss.")] = (
        False
    )
    max_usd: Annotated[
        float | None, typer.Option("--max-usd", help="Stop judging once this much is spent.")
    ] = None

    def judge_config(self) -> Any:
        """The library's `Judge`, or None without --judge (whose companions are refused alone)."""
        from sbs_data.generate.run import Settings
        from sbs_data.quality.judge import Judge

        if not self.judge:
            if self.judge_prompt or self.base_url or self.offline or self.max_usd is not None:
                raise SbsError(
                    "--judge-prompt, --base-url, --offline and --max-usd only apply with --judge SPEC"
                )
            return None
        return Judge(
            self.judge,
            prompt_path=self.judge_prompt,
            base_urls=tuple(self.base_url or ()),
            settings=Settings(concurrency=self.concurrency, rpm=self.rpm),
            offline=self.offline,
            max_usd=self.max_usd,
        )


@app.command()
@friendly
@options(JudgeOptions, "judging")
def score(
    ref: Annotated[str, typer.Argument(help="Generations (or selection) version to score: NAME or NAME@N.")],
    judging: JudgeOptions,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Dataset for the new version (default: REF's).")
    ] = None,
    near_threshold: Annotated[
        float, typer.Option("--near-threshold", help="Near-duplicate Jaccard threshold.")
    ] = 0.8,
    num_perm: Annotated[
        int, typer.Option("--num-perm", help="MinHash permutations for near-duplicates.")
    ] = 32,
    note_: Annotated[str | None, typer.Option("--note", help="Free note stored with the version.")] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Compute quality signals for every visible row into a new scores version (parent = REF)."""
    from sbs_data.quality.signals import ScoreParams
    from sbs_data.quality.signals import score as do_score

    judge = judging.judge_config()
    with Workspace.open(db) as ws:
        v = do_score(
            ws,
            ref,
            name=name,
            params=ScoreParams(near_threshold, num_perm),
            note=note_,
            judge=judge,
            info=info,
        )
        info(f"scored {v.row_count} rows of {ref} -> {v.ref}")
        emit([v.as_row()], fmt)


@app.command("filter")
@friendly
def filter_cmd(
    ref: Annotated[
        str, typer.Argument(help="Version to filter: NAME or NAME@N (scored first if it has no scores).")
    ],
    recipe: Annotated[
        str, typer.Option("--recipe", "-r", help="Recipe YAML file, or a shipped recipe: default, strict.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Dataset for the new version (default: REF's).")
    ] = None,
    no_score: Annotated[
        bool, typer.Option("--no-score", help="Fail instead of scoring REF when it has no scores.")
    ] = False,
    note_: Annotated[str | None, typer.Option("--note", help="Free note stored with the version.")] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Apply a recipe: a new selection version with keep/drop and the first rule that dropped each row."""
    from sbs_data.quality.filter import filter_version
    from sbs_data.quality.recipes import load_recipe

    rec = load_recipe(recipe)  # validated before the workspace is even opened
    with Workspace.open(db) as ws:
        res = filter_version(ws, ref, rec, name=name, auto_score=not no_score, note=note_, info=info)
        if res.scored:
            info(f"scored {res.scored.row_count} rows -> {res.scored.ref}")
        info(
            f"{rec.name} ({rec.hash}): kept {res.version.row_count} of {res.funnel[0]['in']} rows -> {res.version.ref}"
        )
        from sbs_data.quality.report import dropped_cell

        rows = [
            {**{k: f[k] for k in ("step", "rule", "in", "out")}, "dropped": dropped_cell(f)}
            for f in res.funnel
        ]
        rows = [{k: r[k] for k in ("step", "rule", "in", "dropped", "out")} for r in rows]
        if fmt == "json":
            typer.echo(
                json.dumps(
                    {
                        "version": res.version.ref,
                        "recipe": rec.name,
                        "recipe_hash": rec.hash,
                        "funnel": res.funnel,
                    },
                    indent=2,
                )
            )
        else:
            emit(rows, fmt)


@app.command()
@friendly
def report(
    ref: Annotated[str, typer.Argument(help="Version to report on: NAME or NAME@N.")],
    html_: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")
    ] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Funnel per rule, distribution of every signal per split, per-teacher quality and cost."""
    from sbs_data.quality import report as rp

    with Workspace.open(db, read_only=True) as ws:
        rep = rp.report(ws, ref)
    if html_ is not None:
        try:
            html_.parent.mkdir(parents=True, exist_ok=True)  # as `export --out` does
            html_.write_text(rp.to_html(rep), encoding="utf-8")
        except OSError as e:
            raise SbsError(f"{html_}: cannot write HTML report: {e}") from e
        info(f"wrote {html_}")
    if fmt == "json":
        typer.echo(json.dumps(rep, indent=2, default=str))
        return
    if fmt in ("csv", "jsonl"):
        emit(rp.signal_rows(rep), fmt)
        return
    head = f"{rep['version']} ({rep['kind']}, task {rep['task']}): rows of {rep['base']}"
    head += f", scores {rep['scores']}" if rep["scores"] else ""
    head += f", selection {rep['selection']}" if rep["selection"] else ""
    if rep["recipe"]:
        head += f", recipe {rep['recipe']['name']} ({rep['recipe']['hash']})"
    typer.echo(head)
    for n in rep["notes"]:
        info(n)
    if rep["funnel"]:
        emit(rp.funnel_rows(rep), fmt, title="funnel")
    if rep["signals"]:
        emit(
            rp.signal_table(rep),
            fmt,
            title="signals over the rows visible in this version (mean:SPLIT per split)",
        )
    rz = rep.get("rationalization")
    if rz and rz["recovered"]:
        emit(rz["recovered"], fmt, title=f"rationalization: rows of {rz['source']} asked again, recovered")
    if rz and rz["quality"]:
        emit(rz["quality"], fmt, title="hinted against unhinted rows (per split, all scored rows)")
    lab = rep.get("labels")
    if lab and lab.get("distribution"):
        if lab["agreement"] is not None and fmt == "table":
            # a line of its own: as the title of this three-column table it wrapped into a narrow column
            typer.echo(
                f"labels over all generated rows: the teacher agrees with gold on {lab['agreement']:.1%} of "
                f"{lab['rows']:,} labelled rows"
            )
        emit(lab["distribution"], fmt, title="labels: gold and teacher")
    emit(rep["teachers"], fmt, title="per teacher (all generated rows)")


# ---------------------------------------------------------------------------------------------
# Export / push


@dataclass
class ExportOptions:
    """How a version becomes shards: shared by `export` and `push` (the arguments of `export.shards.export`)."""

    shard_format: Annotated[str, typer.Option("--shard-format", help="Shard file format: parquet|jsonl.")] = (
        "parquet"
    )
    max_rows_per_shard: Annotated[int, typer.Option("--max-rows-per-shard", help="Rows per shard file.")] = (
        50_000
    )
    splits: Annotated[
        str | None, typer.Option("--splits", help="Comma-separated splits to export (default: all).")
    ] = None
    validation_fraction: Annotated[
        float | None,
        typer.Option("--validation-fraction", help="Carve this fraction of train examples into validation."),
    ] = None
    seed: Annotated[int, typer.Option("--seed", help="Seed of the validation carve.")] = 0
    label_source: Annotated[str, typer.Option("--label-source", help="Training label: gold|teacher.")] = (
        "gold"
    )
    rationale_source: Annotated[
        str,
        typer.Option(
            "--rationale-source",
            help="Training rationale: output (the completion's) or reasoning_summary (--reasoning-summary's).",
        ),
    ] = "output"
    drop_contaminated: Annotated[
        bool, typer.Option("--drop-contaminated", help="Drop train rows overlapping validation/test inputs.")
    ] = False
    license: Annotated[
        str | None, typer.Option("--license", help="Card licence id (default: the task's source licence).")
    ] = None

    def options(self) -> LibExportOptions:
        """The library's `ExportOptions`, field for field."""
        from sbs_data.export.options import ExportOptions as LibExportOptions

        return LibExportOptions(
            file_format=self.shard_format,
            max_rows_per_shard=self.max_rows_per_shard,
            splits=[s for s in (self.splits or "").split(",") if s.strip()] or None,
            validation_fraction=self.validation_fraction,
            seed=self.seed,
            label_source=self.label_source,
            rationale_source=self.rationale_source,
            drop_contaminated=self.drop_contaminated,
            license=self.license,
        )


@app.command()
@friendly
@options(ExportOptions, "opts")
def export(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@N to export.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write (replaced if it holds an earlier export).")
    ],
    opts: ExportOptions,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Write shards (parquet/jsonl) + manifest.json + a Hugging Face dataset card for a version."""
    from sbs_data.export.shards import export as do_export

    with Workspace.open(db) as ws:
        res = do_export(ws, ref, out, opts.options())
    cont = res.manifest["contamination"]
    if cont.get("flagged_rows"):
        info(
            f"contamination: {cont['flagged_rows']} train row(s) overlap validation/test inputs"
            + (
                f", {cont['dropped_rows']} dropped"
                if cont["dropped_rows"]
                else " (kept; --drop-contaminated removes them)"
            )
            + "; details in manifest.json"
        )
    emit(res.summary_rows(), fmt)
    info(f"load it: python -c \"import datasets; print(datasets.load_dataset('{res.out}'))\"")


@app.command()
@friendly
@options(ExportOptions, "opts")
def push(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@N to push.")],
    repo: Annotated[str, typer.Option("--repo", help="Hub dataset repo ORG/NAME (created if missing).")],
    private: Annotated[
        bool, typer.Option("--private", help="Create the repo private (refuses a public one).")
    ] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Branch to commit to (default main).")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Tag for the commit (default NAME-vN).")] = None,
    from_export: Annotated[
        Path | None,
        typer.Option("--from-export", help="Upload this existing export folder instead of exporting."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Keep the export in this folder.")] = None,
    *,
    opts: ExportOptions,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Export and upload a version to the Hugging Face Hub in one commit, tag it, record it (token: HF_TOKEN or login)."""
    from sbs_data.export.hub import HubTarget
    from sbs_data.export.hub import push as do_push

    target = HubTarget(repo, private=private, revision=revision, tag=tag)
    with Workspace.open(db) as ws:
        res = do_push(
            ws,
            ref,
            target,
            None if from_export else opts.options(),
            from_export=from_export,
            out=out,
            log=info,
        )
    emit([res.as_row()], fmt)


# ---------------------------------------------------------------------------------------------
# Browse and review: the local web app, and the verdicts it stores


@app.command()
@friendly
def browse(
    ref: Annotated[
        str | None,
        typer.Argument(help="Version to open first: NAME or NAME@N (default: the list of versions)."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0 picks a free one).")] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but loopback needs --token.")
    ] = "127.0.0.1",
    token: Annotated[
        str | None, typer.Option("--token", help="Secret every request must carry (printed in the URL).")
    ] = None,
    db: Db = None,
) -> None:
    """Review rationales in a local web app; keyboard verdicts are stored in the workspace as you make them."""
    from sbs_data.review.app import serve

    serve(db, ref, host=host, port=port, token=token, echo=typer.echo)


review_app = typer.Typer(
    help="Verdicts made in `browse`: summarise them, turn them into a selection.", no_args_is_help=True
)
app.add_typer(review_app, name="review")


@review_app.command("status")
@friendly
def review_status(
    name: Annotated[str | None, typer.Argument(help="Only this dataset's versions.")] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """Per reviewed version: rows, verdicts, keep and drop counts, the last verdict's time."""
    from sbs_data.review.store import summary

    with Workspace.open(db, read_only=True) as ws:
        rows = summary(ws, name)
    if not rows and fmt == "table":
        info("no verdicts yet (judge rows in `sbs-data browse`)")
    emit(rows, fmt, columns=["ref", "rows", "generated", "reviewed", "keep", "drop", "last"])


@review_app.command("apply")
@friendly
def review_apply(
    ref: Annotated[str, typer.Argument(help="The reviewed version: NAME or NAME@N.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset for the new selection version.")],
    note_: Annotated[str | None, typer.Option("--note", help="Free note stored with the version.")] = None,
    db: Db = None,
    fmt: Fmt = "table",
) -> None:
    """A new selection version: rows judged drop are dropped (rule `review`), earlier drops stay dropped."""
    from sbs_data.review.store import apply

    with Workspace.open(db) as ws:
        res = apply(ws, ref, name, note=note_)
    info(
        f"review of {ref}: {res.counts['dropped_by_review']} row(s) dropped by review, "
        f"{res.counts['kept']} of {res.counts['rows']} kept -> {res.version.ref}"
    )
    emit([{"version": res.version.ref, **res.counts}], fmt)


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
