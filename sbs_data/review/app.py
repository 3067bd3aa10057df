"""`sbs-data browse`: a local web app over the workspace, with keyboard review written back as verdicts.

How it shares the workspace: DuckDB lets one process write a file, so the server holds the workspace as its
writer for as long as it runs (a second writer, e.g. `sbs-data generate`, gets the usual "in use" error; stop
the server first). Everything it does with that connection reads, except `store.record` (one verdict, committed
before the response) and `store.apply` (a new selection version, the button's POST). The SQL console runs the
same check as `sbs-data sql` (queries only) on a connection sandboxed the same way (no extension installs or
loads, configuration locked) and with no file access (the workspace's own tables only), inside a transaction that is always rolled back (on a writing connection a
"SELECT" can still write through a data-modifying CTE), shows at most `SQL_MAX_ROWS` rows (cells cut at
`SQL_MAX_CELL_CHARS`) and stops a query after `SQL_TIMEOUT_S`.

Safety: it binds 127.0.0.1 unless told otherwise, and any other host needs a token; with a token every request
carries it (`?token=` once sets a cookie, or the `X-SBS-Token` header). Requests must name this server as
their Host (no DNS rebinding). State changes are POSTs with a JSON body (a cross-site form cannot send one)
whose Origin, when sent, is this server. Templates autoescape, and a Content-Security-Policy allows the
page's own script only, so teacher text holding markup shows as text.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any
from urllib.parse import quote, urlencode

import duckdb
from jinja2 import Environment, PackageLoader
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sbs_data import SbsError
from sbs_data.quality import report as rp
from sbs_data.workspace import Version, Workspace, resolve_db_path

from . import rows as rowsmod
from . import store

SQL_MAX_ROWS = 1000
#: The SQL console stops a query after this many seconds: the server answers one request at a time.
SQL_TIMEOUT_S = 10.0
#: A cell of the SQL console shows at most this many characters (a query can make cells of any size).
SQL_MAX_CELL_CHARS = 2000
#: DuckDB's memory cap in the server: the page table and cached pages of the workspace spill past it.
SERVER_MEMORY_BYTES = 2**30
#: The token's cookie is named per port: cookies ignore ports, so two servers on one host would overwrite
#: each other's (`sbs_token_8765`).
TOKEN_COOKIE = "sbs_token"
#: A JSON request body is read up to this size, never further.
BODY_MAX_BYTES = 64 * 1024


def token_cookie(request: Request) -> str:
    return f"{TOKEN_COOKIE}_{request.url.port or 0}"


TOKEN_HEADER = "x-sbs-token"
LOOPBACK_NAMES = ("localhost",)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: The report page is `report.to_html` as it is (its CSS inline): styles allowed inline, still no script.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'"
)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(host: str) -> tuple[str, ...] | None:
    """The Host headers a server bound to `host` answers: on loopback the loopback names and `host` itself
    (no DNS rebinding); elsewhere any (the token guards every request)."""
    if not is_loopback(host):
        return None
    h = host.lower().strip("[]")
    return tuple(dict.fromkeys(("127.0.0.1", "localhost", "[::1]", f"[{h}]" if ":" in h else h)))


def check_host(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise SbsError(
            f"--host {host} would let other machines reach the workspace: pass --token T (every request must "
            "then carry it), or keep the default 127.0.0.1"
        )
    if token is not None and (len(token) < 8 or not token.isprintable() or " " in token):
        raise SbsError("--token must be at least 8 printable characters without spaces")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _jsonable(x: Any) -> Any:
    if isinstance(x, datetime | date):
        return x.isoformat()
    if isinstance(x, bytes | bytearray):
        return x.hex()
    return str(x)


def _cell(x: Any) -> str:
    """A SQL console cell, capped at `SQL_MAX_CELL_CHARS`."""
    s = json.dumps(x, default=_jsonable) if isinstance(x, dict | list) else _fmt(x)
    if len(s) > SQL_MAX_CELL_CHARS:
        s = s[:SQL_MAX_CELL_CHARS] + f"… ({len(s):,} characters)"
    return s


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


class State:
    """What the handlers share: the workspace, one lock around it (DuckDB connections are not thread-safe),
    the narrow row tables built so far, and the token."""

    def __init__(self, ws: Workspace, token: str | None, default_ref: str | None):
        self.ws = ws
        self.token = token
        self.default_ref = default_ref
        self.lock = threading.RLock()
        self.tables = rowsmod.Tables(ws)

    def version(self, ref: str) -> Version:
        try:
            return self.ws.get(ref)
        except SbsError as e:
            raise ApiError(404, str(e)) from None

    def table(self, v: Version) -> rowsmod.RowsTable:
        if v.kind == "examples":
            raise ApiError(
                400,
                f"{v.ref} holds examples, not teacher rows: browse a generations, scores or selection version",
            )
        return self.tables.get(v)


def row_url(ref: str, example_id: str) -> str:
    """The row page of an example: `/v/REF/row/ID`, or `/v/REF/row?id=ID` when a segment of the id is `.` or
    `..` (browsers resolve those in a path, escaped or not, so such a link would land elsewhere)."""
    if any(seg in (".", "..") for seg in example_id.split("/")):
        return f"/v/{ref}/row?" + urlencode({"id": example_id})
    return f"/v/{ref}/row/" + quote(example_id, safe="/")


def _env() -> Environment:
    env = Environment(loader=PackageLoader("sbs_data.review", "templates"), autoescape=True)
    env.filters["fmt"] = _fmt
    env.filters["tojson_attr"] = lambda x: json.dumps(x, default=_jsonable)
    env.globals["signal_meaning"] = rowsmod.describe
    env.globals["row_url"] = row_url
    return env


class Security(BaseHTTPMiddleware):
    """Host check, token check, CSRF check for POSTs, and the security headers on every response."""

    def __init__(self, app: Any, state: State, allowed_hosts: tuple[str, ...] | None):
        super().__init__(app)
        self.state, self.allowed_hosts = state, allowed_hosts

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        host = request.headers.get("host", "")
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.allowed_hosts is not None and hostname.lower() not in self.allowed_hosts:
            return JSONResponse({"error": f"unexpected Host {host[:100]!r}"}, status_code=400)
        token = self.state.token
        set_cookie = False
        if token:
            given = (
                request.query_params.get("token")
                or request.headers.get(TOKEN_HEADER)
                or request.cookies.get(token_cookie(request))
                or ""
            )
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse(
                    {"error": "this server needs its token: open the URL it printed (with ?token=...)"},
                    status_code=403,
                )
            if request.query_params.get("token") and request.method == "GET":
                # Once the cookie holds it, drop it from the address bar (and from bookmarks).
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                url = request.url.path + ("?" + urlencode(rest) if rest else "")
                resp: Response = RedirectResponse(url, status_code=303)
                set_cookie = True
        if request.method not in ("GET", "HEAD"):
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return JSONResponse(
                    {"error": "POST a JSON body (Content-Type: application/json)"}, status_code=415
                )
            origin = request.headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1] != host:
                return JSONResponse(
                    {"error": f"cross-origin request from {origin[:100]!r} refused"}, status_code=403
                )
        if not set_cookie:
            resp = await call_next(request)
        else:
            resp.set_cookie(token_cookie(request), token or "", httponly=True, samesite="strict")
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp


def create_app(
    ws: Workspace,
    token: str | None = None,
    default_ref: str | None = None,
    allowed_hosts: tuple[str, ...] | None = ("127.0.0.1", "localhost", "[::1]"),
    memory_limit: int | None = None,
) -> Starlette:
    """The ASGI app over an open, writable workspace (`allowed_hosts=None` accepts any Host header;
    `memory_limit` in bytes caps DuckDB's buffers for the server's life: pages and tables spill past it)."""
    if memory_limit is not None:
        ws.execute(f"SET memory_limit = '{int(memory_limit) // 2**20}MiB'")  # before the lock below
    # The console reads the workspace only, not the server's files (`read_text('~/.ssh/...')`): anyone who can
    # reach the port (every local user on loopback, where no token is asked) could read what this user can.
    ws.execute("SET enable_external_access = false")
    ws.sandbox()  # the SQL console's rules hold for the whole connection: no extensions, config locked
    state = State(ws, token, default_ref)
    env = _env()

    def page(name: str, request: Request, status: int = 200, **ctx: Any) -> HTMLResponse:
        body = env.get_template(name).render(request=request, path=request.url.path, **ctx)
        return HTMLResponse(body, status_code=status)

    def guarded(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            api = request.url.path.startswith("/api/")
            try:
                with state.lock:
                    return fn(request)
            except (ApiError, SbsError) as e:
                status = e.status if isinstance(e, ApiError) else 400
                msg = e.message if isinstance(e, ApiError) else str(e)
                if api:
                    return JSONResponse({"error": msg}, status_code=status)
                return page("error.html", request, status=status, message=msg)

        return handler

    # -- pages -------------------------------------------------------------------------------------------
    def home(request: Request) -> Response:
        vs = ws.versions()
        by_id = {v.version_id: v.ref for v in vs}
        reviewed = {r["ref"]: r for r in store.summary(ws)}
        items = [
            {
                "v": v,
                "parents": [by_id.get(p, f"#{p}") for p in v.parents],
                "reviewed": reviewed.get(v.ref),
            }
            for v in reversed(vs)
        ]
        return page("versions.html", request, items=items, default_ref=state.default_ref, db=str(ws.path))

    def version_page(request: Request) -> Response:
        v = state.version(request.path_params["ref"])
        if v.kind == "examples":
            raise ApiError(
                400,
                f"{v.ref} holds examples, not teacher rows: browse a generations, scores or selection version",
            )
        t = state.table(v)
        args = dict(request.query_params)
        args.pop("token", None)
        qy = t.parse(args)
        total, rows = t.page(qy)
        pages = max(1, -(-total // qy.size))

        def link(**change: Any) -> str:
            merged = {**args, **{k: str(val) for k, val in change.items() if val is not None}}
            for k, val in change.items():
                if val is None:
                    merged.pop(k, None)
            return request.url.path + ("?" + urlencode(merged) if merged else "")

        def sort_link(col: str) -> str:
            cur = args.get("sort", "")
            nxt = ("-" + col) if cur == col else col
            return link(sort=nxt, page=None)

        return page(
            "version.html",
            request,
            v=v,
            rows=rows,
            total=total,
            all_rows=t.total,
            qy=qy,
            args=args,
            pages=pages,
            link=link,
            sort_link=sort_link,
            signals=t.signals,
            sort_columns=list(t.columns()),
            facets=t.facets(),
            show_signals=[s for s in t.signals if s in _PAGE_SIGNALS],
            lineage=[x.ref for x in ws.lineage(v.ref)],
        )

    def row_page(request: Request) -> Response:
        v = state.version(request.path_params["ref"])
        t = state.table(v)
        eid = request.path_params.get("example_id") or request.query_params.get("id")
        if not eid:
            raise ApiError(400, "which example? /v/NAME@N/row/EXAMPLE_ID or /v/NAME@N/row?id=EXAMPLE_ID")
        rows = t.example(eid)
        if not rows:
            raise ApiError(404, f"no example {eid!r} in {v.ref}")
        prev, nxt = t.neighbours(eid)
        others = rowsmod.other_generations(ws, v, eid)
        return page(
            "row.html",
            request,
            v=v,
            example_id=eid,
            rows=rows,
            first=rows[0],
            signals=t.signals,
            others=others,
            prev=prev,
            next=nxt,
        )

    def report_page(request: Request) -> Response:
        v = state.version(request.path_params["ref"])
        rep = rp.report(ws, v.ref)
        all_sigs = rep["signals"].get("all", {})
        charts = [
            (name, Markup(rp._svg_hist(name, h)), all_sigs.get(name, {}))
            for name, h in rep["histograms"].items()
        ]
        rates = [(n, d.get("rate")) for n, d in all_sigs.items() if d.get("type") == "bool"]
        return page(
            "report.html",
            request,
            v=v,
            rep=rep,
            funnel_svg=Markup(rp._svg_funnel(rep["funnel"])),
            funnel_rows=rp.funnel_rows(rep) if rep["funnel"] else [],
            rates_svg=Markup(rp._svg_rates(rates)),
            charts=charts,
            review_counts=(ws.by_id(v.selection_id).config.get("review") or {}).get("counts")
            if v.selection_id
            else None,
        )

    def report_html(request: Request) -> Response:
        v = state.version(request.path_params["ref"])
        resp = HTMLResponse(rp.to_html(rp.report(ws, v.ref)))
        resp.headers["Content-Security-Policy"] = REPORT_CSP
        return resp

    def sql_page(request: Request) -> Response:
        q = request.query_params.get("q", "")
        cols: list[str] = []
        result: list[list[str]] = []
        error, more = None, False
        stopped = threading.Event()
        if q.strip():
            try:
                ws.check_read_only(q)
                # The server's connection can write: whatever the query does is rolled back (a GET never
                # changes the workspace, even through a data-modifying CTE). Every other request waits for
                # this one: a query still running after SQL_TIMEOUT_S is interrupted.
                with ws.rolled_back() as cur:

                    def stop(cur: duckdb.DuckDBPyConnection = cur) -> None:
                        stopped.set()
                        cur.interrupt()

                    timer = threading.Timer(SQL_TIMEOUT_S, stop)
                    timer.start()
                    try:
                        first = next(iter(cur.sql(q).to_arrow_reader(SQL_MAX_ROWS + 1)), None)
                    finally:
                        timer.cancel()
                if first is not None:
                    cols = list(first.schema.names)
                    data = first.to_pylist()
                    more = len(data) > SQL_MAX_ROWS
                    result = [[_cell(r.get(c)) for c in cols] for r in data[:SQL_MAX_ROWS]]
            except SbsError as e:
                error = str(e)
            except duckdb.Error as e:
                if stopped.is_set():
                    error = f"stopped after {SQL_TIMEOUT_S:g} s (the server answers one request at a time)"
                else:
                    error = f"SQL error: {str(e)[:2000]}"
        return page(
            "sql.html", request, q=q, cols=cols, result=result, error=error, more=more, max_rows=SQL_MAX_ROWS
        )

    # -- the JSON API ---------------------------------------------------------------------------------------
    async def _body(request: Request) -> dict[str, Any]:
        too_big = ApiError(413, f"request body over {BODY_MAX_BYTES // 1024} KiB")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > BODY_MAX_BYTES:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():  # read no further than the cap, whatever the header said
            size += len(chunk)
            if size > BODY_MAX_BYTES:
                raise too_big
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        try:  # a `\ud800` escape decodes to a lone surrogate, which no text column can store
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "the body holds an unpaired surrogate escape (\\ud800-\\udfff)") from None
        return body

    def _field(body: dict[str, Any], key: str, required: bool = True) -> Any:
        if key not in body or body[key] is None:
            if required:
                raise ApiError(400, f"missing field {key!r}")
            return None
        return body[key]

    async def post_verdict(request: Request) -> Response:
        try:
            body = await _body(request)
            unknown = set(body) - {"ref", "example_id", "sample", "verdict", "reason"}
            if unknown:
                raise ApiError(400, f"unknown field(s) {', '.join(sorted(unknown))}")
            ref = _field(body, "ref")
            if not isinstance(ref, str):
                raise ApiError(400, "ref must be a string NAME@N")
        except ApiError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)

        def work(_: Request) -> Response:
            state.version(ref)
            stored = store.record(
                ws,
                ref,
                _field(body, "example_id"),
                _field(body, "verdict"),
                sample=_field(body, "sample", required=False),
                reason=_field(body, "reason", required=False),
            )
            return JSONResponse({"stored": stored})

        return await run_in_threadpool(guarded(work), request)

    def get_verdicts(request: Request) -> Response:
        ref = request.query_params.get("ref")
        if not ref:
            raise ApiError(400, "missing query parameter ref")
        state.version(ref)
        return JSONResponse({"verdicts": store.verdicts(ws, ref)})

    async def post_apply(request: Request) -> Response:
        try:
            body = await _body(request)
            ref, name = _field(body, "ref"), _field(body, "name")
            note = _field(body, "note", required=False)
            if not isinstance(ref, str) or not isinstance(name, str) or not isinstance(note, str | None):
                raise ApiError(400, "ref, name and note must be strings")
        except ApiError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)

        def work(_: Request) -> Response:
            state.version(ref)
            res = store.apply(ws, ref, name, note=note)
            return JSONResponse({"version": res.version.ref, "counts": res.counts})

        return await run_in_threadpool(guarded(work), request)

    def not_allowed(request: Request) -> Response:
        return JSONResponse({"error": "use POST with a JSON body"}, status_code=405)

    routes = [
        Route("/", guarded(home)),
        Route("/v/{ref}", guarded(version_page)),
        Route("/v/{ref}/report", guarded(report_page)),
        Route("/v/{ref}/report.html", guarded(report_html)),
        Route("/v/{ref}/row/{example_id:path}", guarded(row_page)),
        Route("/v/{ref}/row", guarded(row_page)),  # ?id=, for an id holding a `.` or `..` segment
        Route("/sql", guarded(sql_page)),
        Route("/api/verdicts", post_verdict, methods=["POST"]),
        Route("/api/verdicts", guarded(get_verdicts), methods=["GET"]),
        Route("/api/apply", post_apply, methods=["POST"]),
        Route("/api/apply", not_allowed, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("sbs_data.review", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes, middleware=[Middleware(Security, state=state, allowed_hosts=allowed_hosts)]
    )
    app.state.browse = state
    return app


#: Signals shown as columns on the version page (all of them are on the row page and can filter and sort).
_PAGE_SIGNALS = ("words", "vote_share", "input_overlap")


def serve(
    db: Any,
    ref: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Open the workspace as its writer and serve until Ctrl-C (or SIGTERM); the workspace is closed after."""
    import socket

    import uvicorn

    check_host(host, token)
    db_path = resolve_db_path(db)
    if not db_path.exists():  # as the reading commands say (opening it as the writer would make an empty one)
        raise SbsError(f"{db_path}: no workspace here (run `sbs-data init` or an ingest first)")
    with Workspace.open(db_path) as ws:
        v = ws.get(ref) if ref is not None else None
        if v is not None and v.kind == "examples":
            raise SbsError(
                f"{v.ref} holds examples, not teacher rows: browse a generations, scores or selection "
                "version (or give no NAME for the list of versions)"
            )
        # Listen before the slow part (the row table of a big version), so a busy port says so at once.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)  # connections made once the URL is printed wait for uvicorn to accept them
        except OSError as e:
            sock.close()
            raise SbsError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        try:  # the socket is closed whatever happens from here
            app = create_app(
                ws,
                token=token,
                default_ref=v.ref if v else None,
                allowed_hosts=allowed_hosts_for(host),
                memory_limit=SERVER_MEMORY_BYTES,
            )
            if v is not None:
                echo(f"preparing {v.ref} ({v.row_count} rows)...")
                app.state.browse.tables.get(v)  # built once now, so the first page is quick
            bound = sock.getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            path = f"/v/{v.ref}" if v else "/"
            url = f"http://{shown}:{bound}{path}"
            if token:
                url += "?" + urlencode({"token": token})
            echo(f"sbs-data browse: serving {ws.path} at {url}")
            echo(
                "(the workspace is held by this server: other sbs-data commands on it, reading ones too, "
                'get an "in use" error until you stop it with Ctrl-C)'
            )
            config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
            server = uvicorn.Server(config)
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:
                pass  # uvicorn shut down gracefully, then re-raised the Ctrl-C: how a person stops it
        finally:
            sock.close()
    echo("stopped; every verdict is stored in the workspace")
