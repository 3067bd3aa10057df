"""The workspace: one DuckDB file holding every version of every dataset, with lineage.

A version is created inside one transaction and stays `pending` until that transaction commits, so a
crash never leaves a half-written version visible: readers (and the SQL views) only see `committed`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from sbs_data import SbsError

DEFAULT_DB = "sbs.duckdb"
KINDS = ("examples", "generations", "scores", "selection", "merge")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: `EXPLAIN [ANALYZE] [(options)]` after any comments: what follows is the explained statement.
_EXPLAIN_RE = re.compile(
    r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*EXPLAIN\s*(?:ANALY[SZ]E\b\s*)?(?:\([^()]*\)\s*)?", re.I | re.S
)
#: Settings of a connection that runs a user's read-only SQL: no extension downloads or loads, and no
#: later SET may undo them (local files stay readable with read_csv & co: this is a local tool).
_SANDBOX = (
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET lock_configuration = true",
)


#: DuckDB's memory cap while the closing checkpoint folds the write-ahead log into the file.
CHECKPOINT_MEMORY_BYTES = 256 * 2**20


def resolve_db_path(db: str | os.PathLike | None = None) -> Path:
    """`--db PATH`, else `$SBS_DB`, else `./sbs.duckdb`."""
    return Path(db or os.environ.get("SBS_DB") or DEFAULT_DB)


def config_hash(config: Any) -> str:
    """Stable hash of a config (task, teacher, prompt, params or recipe) for lineage."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`NAME@N` -> (NAME, N); `NAME` -> (NAME, None) meaning the latest."""
    name, sep, num = ref.partition("@")
    if not name or not _NAME_RE.match(name):
        raise SbsError(f"bad version reference {ref!r}: expected NAME or NAME@N")
    if not sep:
        return name, None
    if not num.isdigit() or int(num) < 1:
        raise SbsError(f"bad version reference {ref!r}: the part after '@' must be a positive integer")
    return name, int(num)


_UNITS = {
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def _setting_bytes(setting: Any) -> float:
    """'18.6 GiB' -> bytes (DuckDB's memory_limit as text); inf when it cannot be read."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]+)\s*", str(setting))
    if not m or m.group(2).lower() not in _UNITS:
        return float("inf")
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def _sql_value(v: Any) -> str:
    """A setting's value as a SQL literal (SET takes no parameters)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise SbsError(f"bad dataset name {name!r}: use letters, digits, '.', '_' and '-' (no '@')")
    return name


#: What DuckDB says about a file that is not a whole DuckDB database (cut short, overwritten, another format).
_CORRUPT_SIGNS = ("could not read enough bytes", "not a valid duckdb database", "corrupt", "checksum")
_FILE_IN_MESSAGE = re.compile(r'file "([^"]{1,4096})"')


def corrupt_error(
    e: BaseException, path: str | os.PathLike | None = None, force: bool = False
) -> SbsError | None:
    """The clear error for a DuckDB error that says the workspace file is damaged (truncated, overwritten, not
    DuckDB at all), naming the file and what to do; None for any other error (unless `force`)."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if not force and not any(w in msg.lower() for w in _CORRUPT_SIGNS):
        return None
    named = _FILE_IN_MESSAGE.search(msg[:8192])
    where = named.group(1) if named else (str(path) if path is not None else "the workspace")
    return SbsError(
        f"{where}: not a DuckDB workspace or corrupt ({msg[:300]}); restore it from a backup or copy, or point "
        "--db at another file (a new path starts an empty workspace)"
    )


#: What DuckDB (and the OS) say when a write finds the disk full.
_FULL_SIGNS = ("no space left on device", "disk is full", "not enough space on the disk")


def disk_full_error(e: BaseException, path: str | os.PathLike | None = None) -> SbsError | None:
    """The clear error for a write that found the disk full (DuckDB's IOException saying so, or an OSError
    ENOSPC), naming the workspace and what to do; None for any other error."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    full = isinstance(e, OSError) and e.errno == errno.ENOSPC
    if not full and not any(w in msg[:4096].lower() for w in _FULL_SIGNS):
        return None
    named = getattr(e, "filename", None)  # an OSError says which file it was writing
    where = str(named or path or "the workspace")
    return SbsError(
        f"{where}: the disk is full ({msg[:300]}); the command stopped and nothing half-written is visible "
        "(what earlier commands committed is kept): free some space (DuckDB also needs room for the "
        "workspace's .wal log and its temp files) and run it again"
    )


def storage_error(e: BaseException, path: str | os.PathLike | None = None) -> SbsError | None:
    """`disk_full_error` or `corrupt_error` for an error of the workspace's storage, else None."""
    return disk_full_error(e, path) or corrupt_error(e, path)


@contextmanager
def _closing_on_corrupt(con: duckdb.DuckDBPyConnection, path: Path) -> Iterator[None]:
    """Turn a damaged-file error inside the block into `corrupt_error`, closing `con` first."""
    try:
        yield
    except duckdb.Error as e:
        bad = corrupt_error(e, path)
        if bad is None:
            raise
        with contextlib.suppress(duckdb.Error):
            con.close()
        raise bad from None


@dataclass(frozen=True)
class Version:
    version_id: int
    dataset: str
    num: int
    kind: str
    task: str | None
    parents: tuple[int, ...]
    examples_id: int | None
    base_id: int | None
    scores_id: int | None
    selection_id: int | None
    config_hash: str
    config: dict
    run_id: str | None
    row_count: int | None
    stats: dict | None
    status: str
    created_at: datetime
    note: str | None

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.num}"

    def as_row(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "kind": self.kind,
            "task": self.task,
            "rows": self.row_count,
            "config_hash": self.config_hash,
            "run_id": self.run_id,
            "created_at": self.created_at.isoformat(sep=" ", timespec="seconds"),
            "note": self.note or "",
        }


@dataclass
class Run:
    """One command's entry in `sbs_runs`, as the body of `Workspace.run` sees it.

    The body may add to `stats` (stored when the run ends) and set `status` (e.g. "stopped" when it
    ended early on purpose); an exception always wins and stores "failed" or "interrupted".
    """

    run_id: str
    command: str
    stats: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"


#: Content table and the version column that keys it, per kind of rows a version can show.
_CONTENT = {
    "examples": ("sbs_examples", "base_id"),
    "generations": ("sbs_generations", "base_id"),
    "scores": ("sbs_scores", "scores_id"),
}

#: Tables whose rows belong to one version (by `version_id`).
_CONTENT_TABLES = ("sbs_examples", "sbs_generations", "sbs_scores", "sbs_selections")
#: (workspace file, version id) of the streamed versions this process is writing right now.
_LIVE_PENDING: set[tuple[str, int]] = set()

_VERSION_COLS = (
    "version_id, dataset, num, kind, task, parents, examples_id, base_id, scores_id, selection_id, "
    "config_hash, config, run_id, row_count, stats, status, created_at, note"
)


def _version(row: tuple) -> Version:
    vals = list(row)
    vals[5] = tuple(vals[5] or ())
    vals[11] = json.loads(vals[11]) if vals[11] else {}
    vals[14] = json.loads(vals[14]) if vals[14] else None
    return Version(*vals)


def _migrations() -> list[tuple[int, str, str]]:
    out = []
    for f in resources.files("sbs_data.migrations").iterdir():
        m = re.match(r"^(\d+)_(.+)\.sql$", f.name)
        if m:
            out.append((int(m.group(1)), m.group(2), f.read_text()))
    out.sort()
    nums = [n for n, _, _ in out]
    if len(set(nums)) != len(nums):
        raise RuntimeError(f"duplicate migration numbers: {nums}")
    return out


class Workspace:
    """An open workspace. Use `Workspace.open(...)` and close it (or use `with`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool):
        self.con = con
        self.path = path
        self.read_only = read_only
        self._in_tx = False
        self._run: Run | None = None

    # -- opening & migrations -----------------------------------------------------------------
    @classmethod
    def open(cls, db: str | os.PathLike | None = None, read_only: bool = False) -> Workspace:
        path = resolve_db_path(db)
        if read_only and not path.exists():
            raise SbsError(f"{path}: no workspace here (run `sbs-data init` or an ingest first)")
        if not read_only and path.parent and not path.parent.exists():
            raise SbsError(f"{path}: folder {path.parent} does not exist")
        if read_only:
            # Migrate first if needed, so a read-only command on an older workspace still works.
            con = cls._connect(path, read_only=True)
            with _closing_on_corrupt(con, path):
                pending = cls._pending(con, path)
            if pending:
                con.close()
                cls.open(path, read_only=False).close()
                con = cls._connect(path, read_only=True)
            return cls(con, path, True)
        con = cls._connect(path, read_only=False)
        ws = cls(con, path, False)
        with _closing_on_corrupt(con, path):  # a cut-short file shows itself at the first read of its tables
            ws._migrate()
            ws._sweep_pending()
        return ws

    @staticmethod
    def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as e:
            msg = str(e)
            if "lock" in msg.lower():
                raise SbsError(
                    f"{path}: the workspace is in use by another sbs-data process ({msg}); wait for it to end "
                    "(a running `sbs-data browse` holds it until stopped with Ctrl-C)"
                ) from e
            bad = corrupt_error(e, path)
            if bad is not None:
                raise bad from None
            raise SbsError(f"{path}: cannot open workspace: {msg}") from e
        except duckdb.Error as e:
            raise corrupt_error(e, path, force=True) or SbsError(str(e)) from None

    @staticmethod
    def _applied(con: duckdb.DuckDBPyConnection) -> list[int]:
        has = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'sbs_migrations'"
        ).fetchall()[0][0]
        if not has:
            return []
        return [r[0] for r in con.execute("SELECT version FROM sbs_migrations ORDER BY version").fetchall()]

    @classmethod
    def _pending(cls, con: duckdb.DuckDBPyConnection, path: Path) -> list[tuple[int, str, str]]:
        applied = cls._applied(con)
        known = _migrations()
        newest_known = known[-1][0] if known else 0
        if applied and max(applied) > newest_known:
            raise SbsError(
                f"{path}: this workspace has schema version {max(applied)}, newer than this sbs-data "
                f"understands ({newest_known}); upgrade sbs-data to open it"
            )
        return [m for m in known if m[0] not in set(applied)]

    def _migrate(self) -> None:
        pending = self._pending(self.con, self.path)
        if not pending:
            return
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS sbs_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
            "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
        )
        for num, name, sql in pending:
            with self.transaction():
                self.con.execute(sql)
                self.con.execute("INSERT INTO sbs_migrations (version, name) VALUES (?, ?)", [num, name])

    def schema_version(self) -> int:
        applied = self._applied(self.con)
        return max(applied) if applied else 0

    def close(self) -> None:
        """Checkpoint under a memory cap first: closing replays the write-ahead log into the file, and at
        DuckDB's default cap (80% of RAM) that alone took 1.15 GB after a 1M-row version; capped it spills."""
        if not self.read_only and not self._in_tx:
            try:
                with self.tuned(memory_limit=CHECKPOINT_MEMORY_BYTES):
                    self.execute("CHECKPOINT")
            except duckdb.Error:
                pass  # close() checkpoints again itself, or the log is replayed on the next open
        self.con.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing: on any exception the workspace is exactly as before."""
        if self._in_tx:
            yield self.con
            return
        self._require_writable()
        self.con.execute("BEGIN TRANSACTION")
        self._in_tx = True
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")
        finally:
            self._in_tx = False

    @contextmanager
    def rolled_back(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor whose work is always rolled back, for a user's query. On a writable connection a statement
        DuckDB classifies as a SELECT can still write (a data-modifying CTE, `WITH d AS (DELETE ... RETURNING
        *) SELECT ...`, or `nextval`), so `check_read_only` alone does not make it read-only there."""
        cur = self.con.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            yield cur
        finally:
            try:
                cur.execute("ROLLBACK")
            finally:
                cur.close()

    def _require_writable(self) -> None:
        if self.read_only:
            raise SbsError("this workspace connection is read-only")

    # -- runs -------------------------------------------------------------------------------------
    def start_run(self, command: str) -> str:
        """Record a command as running; prefer `run()`, which also always finishes it."""
        run_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        with self.transaction():
            self.con.execute("INSERT INTO sbs_runs (run_id, command) VALUES (?, ?)", [run_id, command])
        return run_id

    def finish_run(self, run_id: str, status: str = "ok", stats: dict | None = None) -> None:
        with self.transaction():
            self.con.execute(
                "UPDATE sbs_runs SET finished_at = current_timestamp, status = ?, stats = ? WHERE run_id = ?",
                [status, json.dumps(stats or {}, default=str), run_id],
            )

    @contextmanager
    def run(self, command: str) -> Iterator[Run]:
        """Record the body as one run in `sbs_runs`: "ok" (or the body's `run.status`) with `run.stats`,
        else "failed" / "interrupted" with the error text, so a library call leaves the same trace as the CLI.

        A run opened inside another joins it (one run per top-level call: `filter` scoring first records
        one run). Open it outside any `transaction()`: a run inside a rolled-back one would vanish with it.
        """
        if self._run is not None:
            yield self._run
            return
        run = self._run = Run(self.start_run(command), command)
        try:
            yield run
        except BaseException as e:
            self._run = None
            stopped = (KeyboardInterrupt, SystemExit, duckdb.InterruptException)
            status = "interrupted" if isinstance(e, stopped) else "failed"
            error = (str(e) or type(e).__name__)[:2000]
            try:
                self.finish_run(run.run_id, status, {**run.stats, "error": error})
            except (duckdb.Error, SbsError, OSError):
                pass  # never mask the body's error with a bookkeeping one (a full disk fails both)
            raise
        self._run = None
        self.finish_run(run.run_id, run.status, run.stats)

    # -- session settings ---------------------------------------------------------------------
    @contextmanager
    def tuned(self, memory_limit: int | None = None, **settings: bool | int | str) -> Iterator[None]:
        """DuckDB settings for the body, then the caller's back (also after an error).

        `memory_limit` (bytes) only ever lowers the limit, and only for a workspace file (whose data can
        spill to disk; an in-memory one cannot); other settings are set as given, e.g.
        `preserve_insertion_order=False`. Restored outside any aborted transaction, which refuses SET.
        """
        old = {k: self.one(f"SELECT current_setting('{k}')") for k in settings}
        old_limit = self.one("SELECT current_setting('memory_limit')")
        on_disk = self.one(
            "SELECT path IS NOT NULL FROM duckdb_databases() WHERE database_name = current_database()"
        )
        lower = on_disk and memory_limit is not None and memory_limit < _setting_bytes(old_limit)
        if lower and memory_limit is not None:
            self.con.execute(f"SET memory_limit = '{max(1, memory_limit // 2**20)}MiB'")
        for k, v in settings.items():
            self.con.execute(f"SET {k} = {_sql_value(v)}")

        def restore() -> None:
            if (
                lower
            ):  # the setting reads back rounded ("18.8 GiB"): reset to the default when that is what it was
                self.con.execute("RESET memory_limit")
                if self.one("SELECT current_setting('memory_limit')") != old_limit:
                    self.con.execute(f"SET memory_limit = {_sql_value(old_limit)}")
            for k, v in old.items():
                self.con.execute(f"SET {k} = {_sql_value(v)}")

        try:
            yield
        except BaseException:
            try:
                restore()
            except duckdb.Error:
                pass  # inside a caller's aborted transaction: its error is the one to see
            raise
        restore()

    # -- a user's SQL -----------------------------------------------------------------------------
    def check_read_only(self, sql: str) -> None:
        """Refuse `sql` unless every statement in it only reads: SELECT (with DESCRIBE, SHOW, SUMMARIZE,
        FROM-first) or an EXPLAIN of one.

        A read-only connection still lets COPY ... TO and EXPORT DATABASE write files, INSTALL download,
        ATTACH open other files, and SET/PRAGMA/CALL change the session; DuckDB's own statement
        classification (not a regex over the text) tells them apart. The error names `--write`.
        """
        try:
            statements = self.con.extract_statements(sql)
        except duckdb.Error as e:
            raise SbsError(f"SQL error: {e}") from e
        for st in statements:
            try:
                kind = st.type.name
            except ValueError:  # a statement type this duckdb's Python API cannot name (UPDATE EXTENSIONS)
                kind = "unclassified"
            if kind == "EXPLAIN":
                m = _EXPLAIN_RE.match(st.query)
                inner = self.con.extract_statements(st.query[m.end() :]) if m else []
                if len(inner) == 1 and inner[0].type.name == "SELECT":
                    continue
            elif kind == "SELECT":
                continue
            head = " ".join(st.query.split())[:60]
            raise SbsError(
                f"SQL: {kind} statements ({head!r}) can write files or change the workspace or session; "
                "without --write only queries (SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) run. "
                "Pass --write to run it"
            )

    def statement_count(self, sql: str) -> int:
        """How many statements `sql` holds (parsed by DuckDB, not split on `;`); a parse error is an SbsError."""
        try:
            return len(self.con.extract_statements(sql))
        except duckdb.Error as e:
            raise SbsError(f"SQL error: {str(e).splitlines()[0]}") from e

    def sandbox(self) -> None:
        """Lock this connection for a user's read-only SQL: no extension installs or autoloads (no network),
        and the configuration can no longer change."""
        for stmt in _SANDBOX:
            self.con.execute(stmt)

    # -- versions catalog -----------------------------------------------------------------------
    def versions(self, dataset: str | None = None, include_pending: bool = False) -> list[Version]:
        where, params = [], []
        if not include_pending:
            where.append("status = 'committed'")
        if dataset:
            where.append("dataset = ?")
            params.append(dataset)
        sql = f"SELECT {_VERSION_COLS} FROM sbs_versions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY dataset, num"
        return [_version(r) for r in self.con.execute(sql, params).fetchall()]

    def by_id(self, version_id: int | None) -> Version:
        """The version with this id (an absent id, e.g. a version without scores, is refused)."""
        if version_id is None:
            raise SbsError("no version id given")
        row = self.con.execute(
            f"SELECT {_VERSION_COLS} FROM sbs_versions WHERE version_id = ?", [version_id]
        ).fetchall()
        if not row:
            raise SbsError(f"no version with id {version_id}")
        return _version(row[0])

    def get(self, ref: str, kinds: tuple[str, ...] | None = None) -> Version:
        """Resolve `NAME@N` or `NAME` (latest committed) to a version, optionally of given kinds."""
        name, num = parse_ref(ref)
        if num is None:
            row = self.con.execute(
                f"SELECT {_VERSION_COLS} FROM sbs_versions WHERE dataset = ? AND status = 'committed' "
                "ORDER BY num DESC LIMIT 1",
                [name],
            ).fetchall()
        else:
            row = self.con.execute(
                f"SELECT {_VERSION_COLS} FROM sbs_versions WHERE dataset = ? AND num = ? AND status = 'committed'",
                [name, num],
            ).fetchall()
        if not row:
            known = [
                r[0]
                for r in self.con.execute("SELECT DISTINCT dataset FROM sbs_versions ORDER BY 1").fetchall()
            ]
            hint = f" (datasets: {', '.join(known)})" if known else " (the workspace is empty)"
            raise SbsError(f"no such version {ref!r} in {self.path}{hint}")
        v = _version(row[0])
        if kinds and v.kind not in kinds and not (v.kind != "examples" and "generations" in kinds):
            raise SbsError(f"{v.ref} is a {v.kind} version; expected {' or '.join(kinds)}")
        return v

    def check_target(
        self,
        dataset: str,
        kind: str,
        task: str | None = None,
        *,
        source: Version | None = None,
        flag: str = "--name",
    ) -> None:
        """Refuse to add a `kind` version of `task` to `dataset` when the dataset holds something else: examples
        where teacher rows would go (or the reverse), or another task's rows; with `source`, also the source's
        own dataset, which a new version would shadow. Cheap: commands call it before any paid work, and
        `new_version` calls it again for every version it makes."""
        check_name(dataset)
        if source is not None and dataset == source.dataset:
            raise SbsError(
                f"{flag} {dataset!r} is the dataset it reads ({source.ref}): a {kind} version there would "
                f"shadow it; choose another {flag}"
            )
        row = self.con.execute(
            "SELECT num, kind, task FROM sbs_versions WHERE dataset = ? AND status = 'committed' "
            "ORDER BY num DESC LIMIT 1",
            [dataset],
        ).fetchall()
        if not row:
            return
        num, last_kind, last_task = row[0]
        if (last_kind == "examples") != (kind == "examples"):
            what = "examples" if kind == "examples" else "teacher rows"
            raise SbsError(
                f"dataset {dataset!r} holds {last_kind} ({dataset}@{num}), not {what}; choose another {flag}"
            )
        if task and last_task and task != last_task:
            raise SbsError(
                f"dataset {dataset!r} is task {last_task!r} ({dataset}@{num}), not {task!r}; choose another {flag}"
            )

    def next_num(self, dataset: str) -> int:
        return self.con.execute(
            "SELECT coalesce(max(num), 0) + 1 FROM sbs_versions WHERE dataset = ?", [dataset]
        ).fetchall()[0][0]

    @contextmanager
    def new_version(
        self,
        dataset: str,
        kind: str,
        config: dict,
        parents: list[Version] | tuple[Version, ...] = (),
        task: str | None = None,
        note: str | None = None,
        run_id: str | None = None,
        streamed: bool = False,
    ) -> Iterator[Version]:
        """Create `dataset@N`; the caller writes its rows, then it is committed.

        Rows are written to the content table that matches the kind, keyed by `version.version_id`.
        If the body raises, nothing (neither rows nor the catalog entry) remains.

        By default it is all one transaction. DuckDB keeps a transaction's new rows in memory (about 1 KB a
        row whatever its memory_limit), so a body writing millions of rows passes `streamed=True`: the
        version is recorded `pending` first, each write commits on its own, and the version turns
        `committed` at the end. Readers and views never see a pending version; a failure deletes its rows,
        and a killed process's leftovers are deleted when the workspace is next opened writable.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind}")
        self.check_target(dataset, kind, task or (parents[0].task if parents else None))
        if not streamed:
            with self.transaction():
                pending = self._insert_pending(dataset, kind, config, parents, task, note, run_id)
                yield pending
                self._commit_pending(pending)
            return
        if self._in_tx:
            raise RuntimeError("a streamed version commits write by write; open it outside a transaction")
        with self.transaction():
            pending = self._insert_pending(dataset, kind, config, parents, task, note, run_id)
        live = (str(self.path.resolve()), pending.version_id)
        _LIVE_PENDING.add(live)
        try:
            yield pending
            with self.transaction():
                self._commit_pending(pending)
        except BaseException:
            try:
                self._drop_pending([pending.version_id])
            except duckdb.Error:
                pass  # the next writable open sweeps it; never mask the body's error
            raise
        finally:
            _LIVE_PENDING.discard(live)

    def _insert_pending(
        self,
        dataset: str,
        kind: str,
        config: dict,
        parents: list[Version] | tuple[Version, ...],
        task: str | None,
        note: str | None,
        run_id: str | None,
    ) -> Version:
        num = self.next_num(dataset)
        parent = parents[0] if parents else None
        vid = self.con.execute("SELECT nextval('sbs_version_seq')").fetchall()[0][0]
        examples_id = vid if kind == "examples" else (parent.examples_id if parent else None)
        if kind == "generations" and parent is not None and parent.kind == "examples":
            examples_id = parent.version_id
        base_id = (
            vid if kind in ("examples", "generations", "merge") else (parent.base_id if parent else None)
        )
        # A scores version keeps the chain's selection and vice versa; new content starts clean.
        scores_id = (
            vid if kind == "scores" else (parent.scores_id if parent and kind == "selection" else None)
        )
        selection_id = (
            vid if kind == "selection" else (parent.selection_id if parent and kind == "scores" else None)
        )
        self.con.execute(
            "INSERT INTO sbs_versions (version_id, dataset, num, kind, task, parents, examples_id, base_id, "
            "scores_id, selection_id, config_hash, config, run_id, status, note) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            [
                vid,
                dataset,
                num,
                kind,
                task or (parent.task if parent else None),
                [p.version_id for p in parents],
                examples_id,
                base_id,
                scores_id,
                selection_id,
                config_hash(config),
                json.dumps(config, sort_keys=True, default=str),
                run_id,
                note,
            ],
        )
        return self.by_id(vid)

    def _commit_pending(self, pending: Version) -> None:
        count, stats = self._count(pending)
        self.con.execute(
            "UPDATE sbs_versions SET status = 'committed', row_count = ?, stats = ? WHERE version_id = ?",
            [count, json.dumps(stats), pending.version_id],
        )

    def _drop_pending(self, version_ids: list[int]) -> None:
        """Delete pending versions and every row written for them, in one transaction."""
        if not version_ids:
            return
        marks = ", ".join("?" * len(version_ids))
        with self.transaction():
            for table in _CONTENT_TABLES:
                self.con.execute(f"DELETE FROM {table} WHERE version_id IN ({marks})", version_ids)
            self.con.execute(
                f"DELETE FROM sbs_versions WHERE status = 'pending' AND version_id IN ({marks})", version_ids
            )

    def _sweep_pending(self) -> None:
        """Remove the pending versions of killed processes (only one process can write, so a pending
        version that no streamed write of this process holds open is dead)."""
        key = str(self.path.resolve())
        dead = [
            vid
            for (vid,) in self.con.execute(
                "SELECT version_id FROM sbs_versions WHERE status = 'pending'"
            ).fetchall()
            if (key, vid) not in _LIVE_PENDING
        ]
        self._drop_pending(dead)

    def _count(self, v: Version) -> tuple[int, dict]:
        """Visible row count of a version and its per-split breakdown."""
        sql, params = self.rows_query(v, columns="split")
        rows = self.con.execute(
            f"SELECT split, count(*) FROM ({sql}) GROUP BY split ORDER BY split", params
        ).fetchall()
        by_split = {s: n for s, n in rows}
        return sum(by_split.values()), {"rows_by_split": by_split}

    # -- SQL idioms: every statement goes through these, so results never stay half-read ------------
    # A damaged file shows itself when a read first reaches a missing page, a full disk when a write needs
    # room: these say so clearly (`storage_error`) instead of DuckDB's IOException.
    def _statement(self, sql: str, params: list | None) -> duckdb.DuckDBPyConnection:
        try:
            return self.con.execute(sql, params or [])
        except duckdb.IOException as e:
            raise storage_error(e, self.path) or e from None

    def _fetch(self, cur: duckdb.DuckDBPyConnection) -> list[tuple]:
        try:
            return cur.fetchall()
        except duckdb.IOException as e:
            raise storage_error(e, self.path) or e from None

    def execute(self, sql: str, params: list | None = None) -> None:
        """Run a statement for its effect (DDL, INSERT, UPDATE...); any result is consumed."""
        self._fetch(self._statement(sql, params))

    def one(self, sql: str, params: list | None = None) -> Any:
        """First column of the first row (or None). duckdb 2 refuses new work while a result is half-read,
        so helpers here always fetch results completely; use them instead of `fetchone()`."""
        rows = self._fetch(self._statement(sql, params))
        return rows[0][0] if rows else None

    def all(self, sql: str, params: list | None = None) -> list[tuple]:
        """Every row of a query, as tuples."""
        return self._fetch(self._statement(sql, params))

    def query(self, sql: str, params: list | None = None) -> tuple[list[str] | None, list[tuple]]:
        """Column names (None for a statement that returns no result set) and every row."""
        cur = self._statement(sql, params)
        if cur.description is None:
            return None, []
        return [d[0] for d in cur.description], self._fetch(cur)

    def arrow(self, sql: str, params: list | None = None) -> Any:
        """A query's whole result as a pyarrow Table (columnar: no Python object per value)."""
        self.con.execute("SELECT 1").fetchall()  # no half-read result may be pending
        return self.con.sql(sql, params=params or None).to_arrow_table()

    def batches(self, sql: str, params: list | None = None, batch_rows: int = 65_536) -> Iterator[Any]:
        """A query's result as pyarrow RecordBatches of at most `batch_rows`, so memory stays bounded.

        Runs on its own cursor, so the caller may use the workspace while iterating; that cursor sees
        committed data only, so it refuses to run inside a `transaction()`.
        """
        if self._in_tx:
            raise RuntimeError("Workspace.batches reads committed data; call it outside a transaction")
        cur = self.con.cursor()
        try:
            reader = cur.sql(sql, params=params or None).to_arrow_reader(batch_rows)
            yield from reader
        finally:
            cur.close()

    def stream(self, sql: str, params: list | None = None, batch_rows: int = 65_536) -> Iterator[Any]:
        """Like `batches`, but on the workspace's own connection, so it sees this session's temp tables
        (`scratch`); nothing else may run on the workspace until the iterator is exhausted."""
        self.con.execute("SELECT 1").fetchall()
        yield from self.con.sql(sql, params=params or None).to_arrow_reader(batch_rows)

    @contextmanager
    def scratch(self, *names: str) -> Iterator[None]:
        """Temp tables `names` (this connection's only; they spill to disk under the memory cap like any
        table, also in a read-only workspace) for the body to create and fill, dropped after it."""
        try:
            yield
        finally:
            for name in names:
                try:
                    self.con.execute(f"DROP TABLE IF EXISTS temp.{name}")
                except duckdb.Error:
                    pass  # an aborted transaction of the caller: its error is the one to see

    @contextmanager
    def registered(self, name: str, frame: Any) -> Iterator[str]:
        """Make a polars/pandas DataFrame or pyarrow Table/RecordBatchReader queryable as `name` for the body,
        and always unregister it (also on error), so no stale view of a freed frame survives."""
        self.con.execute(
            "SELECT 1"
        ).fetchall()  # finish any pending result; duckdb refuses register() otherwise
        self.con.register(name, frame)
        try:
            yield name
        finally:
            self.con.unregister(name)

    def insert_frame(self, table: str, frame: Any, fixed: dict[str, Any] | None = None) -> int:
        """Insert a frame's rows into `table`, columns matched by name; `fixed` sets columns to one value
        for every row (e.g. {"version_id": 7}). Returns the number of rows inserted."""
        fixed = fixed or {}
        consts = "".join(f'? AS "{k}", ' for k in fixed)
        with self.registered("_sbs_insert", frame) as src:
            n = self._fetch(
                self._statement(
                    f"INSERT INTO {table} BY NAME SELECT {consts}* FROM {src}", list(fixed.values())
                )
            )
        return int(n[0][0]) if n else 0

    def append(self, table: str, version: Version, rows: Any) -> int:
        """Append rows (a polars/pandas DataFrame or a pyarrow Table) to a content table for `version`.

        Columns are matched by name; `version_id` is filled in. Must run inside `new_version`.
        """
        if version.status != "pending":
            raise SbsError(f"{version.ref} is committed and immutable")
        return self.insert_frame(table, rows, {"version_id": version.version_id})

    def set_note(self, ref: str, note: str) -> Version:
        v = self.get(ref)
        with self.transaction():
            self.con.execute("UPDATE sbs_versions SET note = ? WHERE version_id = ?", [note, v.version_id])
        return self.by_id(v.version_id)

    # -- reading rows -----------------------------------------------------------------------------
    def visible(self, v: Version, rows: str | None = None, alias: str = "t") -> tuple[str, list]:
        """FROM clause (table `alias`, WHERE included) over the rows `v` shows, and its parameters.

        The one place that says which rows a version shows: its content (examples, generations, or with
        `rows="scores"` its scores) keyed by the version's base (or scores) id, minus the rows its selection
        drops. Append more conditions with `AND ...`.
        """
        rows = rows or ("examples" if v.kind == "examples" else "generations")
        table, id_attr = _CONTENT[rows]
        vid = getattr(v, id_attr)
        if vid is None:
            raise SbsError(f"{v.ref} has no {rows}")
        if rows == "examples" or v.selection_id is None:
            return f"{table} {alias} WHERE {alias}.version_id = ?", [vid]
        return (
            f"{table} {alias} JOIN sbs_selections _sel ON _sel.version_id = ? AND _sel.example_id = {alias}.example_id "
            f"AND _sel.sample_idx = {alias}.sample_idx AND _sel.keep WHERE {alias}.version_id = ?",
            [v.selection_id, vid],
        )

    def rows_query(self, v: Version, columns: str = "*", rows: str | None = None) -> tuple[str, list]:
        """SQL (and params) selecting `columns` (comma-separated names, or *) of the rows visible in `v`."""
        src, params = self.visible(v, rows, alias="t")
        cols = "t.*" if columns.strip() == "*" else ", ".join(f"t.{c.strip()}" for c in columns.split(","))
        return f"SELECT {cols} FROM {src}", params

    def lineage(self, ref: str) -> list[Version]:
        """The version and all its ancestors, newest first (breadth-first over parents)."""
        start = self.get(ref)
        out, seen, queue = [], set(), [start]
        while queue:
            v = queue.pop(0)
            if v.version_id in seen:
                continue
            seen.add(v.version_id)
            out.append(v)
            queue.extend(self.by_id(p) for p in v.parents)
        return out

    def diff(self, a_ref: str, b_ref: str) -> dict[str, Any]:
        """Rows added / removed / changed from A to B, keyed by example (and sample for generations)."""
        a, b = self.get(a_ref), self.get(b_ref)
        if (a.kind == "examples") != (b.kind == "examples"):
            raise SbsError(
                f"cannot diff {a.ref} ({a.kind}) with {b.ref} ({b.kind}): one holds examples, one generations"
            )
        if a.kind == "examples":
            key, content = (
                "example_id",
                "md5(concat_ws('|', split, input_text, coalesce(label, ''), coalesce(CAST(choices AS VARCHAR), '')))",
            )
        else:
            key = "example_id, sample_idx"
            content = "md5(concat_ws('|', split, coalesce(raw, ''), coalesce(rationale, ''), coalesce(pred_label, ''), parse_status))"
        qa, pa = self.rows_query(a)
        qb, pb = self.rows_query(b)
        keycols = [k.strip() for k in key.split(",")]
        on = " AND ".join(f"a.{k} = b.{k}" for k in keycols)
        sql = f"""
            WITH a AS (SELECT {key}, {content} AS h FROM ({qa})), b AS (SELECT {key}, {content} AS h FROM ({qb}))
            SELECT
              count(*) FILTER (WHERE a.h IS NULL) AS added,
              count(*) FILTER (WHERE b.h IS NULL) AS removed,
              count(*) FILTER (WHERE a.h IS NOT NULL AND b.h IS NOT NULL AND a.h <> b.h) AS changed,
              count(*) FILTER (WHERE a.h = b.h) AS unchanged
            FROM a FULL OUTER JOIN b ON {on}
        """
        added, removed, changed, unchanged = self.con.execute(sql, pa + pb).fetchall()[0]
        sample_sql = f"""
            WITH a AS (SELECT {key}, {content} AS h FROM ({qa})), b AS (SELECT {key}, {content} AS h FROM ({qb}))
            SELECT CASE WHEN a.h IS NULL THEN 'added' WHEN b.h IS NULL THEN 'removed' ELSE 'changed' END AS change,
                   {", ".join(f"coalesce(a.{k}, b.{k}) AS {k}" for k in keycols)}
            FROM a FULL OUTER JOIN b ON {on}
            WHERE a.h IS DISTINCT FROM b.h ORDER BY 1, 2 LIMIT 20
        """
        examples = [
            dict(zip(["change", *keycols], r)) for r in self.con.execute(sample_sql, pa + pb).fetchall()
        ]
        return {
            "a": a.ref,
            "b": b.ref,
            "added": added,
            "removed": removed,
            "changed": changed,
            "unchanged": unchanged,
            "examples": examples,
        }

    def tables(self, internal: bool = True) -> list[dict[str, Any]]:
        """Tables and views with row counts; `internal=False` leaves out the `sbs_*` ones the views read."""
        rows = self.con.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = 'main' ORDER BY table_type, table_name"
        ).fetchall()
        out = []
        for name, ttype in rows:
            if not internal and name.startswith("sbs_"):
                continue
            n = self.con.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0]
            out.append({"name": name, "type": "view" if "VIEW" in ttype else "table", "rows": n})
        return out
