"""A loopback stand-in for the Hugging Face Hub, enough for `huggingface_hub`'s dataset-repo upload path.

Implements what `create_repo`, `upload_folder` (validate-yaml, preupload, LFS batch/upload/verify, ndjson
commit, tree listing for delete_patterns), `repo_info`, `list_repo_refs`, `list_repo_commits`, `create_branch`,
`create_tag` and `get_paths_info` call, with git-like state (commits with parents, branches, tags, an LFS store) and switches
for faults: a concurrent commit before ours (-> 412 on our stale parent), dropped connections on LFS uploads
and on the commit call. Run with `FakeHub(token=...)` as a context manager; `hub.url` is the endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors", ".zst", ".gz")
GITATTRIBUTES = (
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"
)


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def files_at(self, commit_id: str) -> dict[str, dict]:
        return self.commits[commit_id]["files"]


class FakeHub:
    """In-memory Hub. Inspect `repos`, `lfs`, `calls`, `auth_seen`; arm faults via the counters."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.calls: Counter[str] = Counter()
        self.auth_seen: list[str | None] = []
        self.responses: Counter[str] = Counter()  # "endpoint status" -> count
        # Faults (each counts down as it fires).
        self.concurrent_commits = 0  # a foreign commit lands right before ours -> 412 on our parent_commit
        self.drop_lfs_puts = 0  # the upload PUT's connection dies before any answer
        self.drop_commits = 0  # the commit POST's connection dies before it is applied
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- git-like helpers --------------------------------------------------------------------------
    def create(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id, private)
        cid = self._new_commit(repo, None, {".gitattributes": _regular(GITATTRIBUTES)}, "initial commit")
        repo.branches["main"] = cid
        self.repos[repo_id] = repo
        return repo

    def _new_commit(
        self, repo: Repo, parent: str | None, files: dict[str, dict], message: str, description: str = ""
    ) -> str:
        blob = json.dumps(
            {"parent": parent, "message": message, "files": {p: f["oid"] for p, f in sorted(files.items())}},
            sort_keys=True,
        ).encode()
        cid = hashlib.sha1(blob + str(len(repo.commits)).encode()).hexdigest()
        repo.commits[cid] = {
            "id": cid,
            "parent": parent,
            "files": files,
            "message": message,
            "description": description,
        }
        return cid

    def resolve(self, repo: Repo, rev: str) -> str | None:
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.tags:
            return repo.tags[rev]
        matches = [c for c in repo.commits if c.startswith(rev)] if len(rev) >= 7 else []
        return matches[0] if len(matches) == 1 else None

    def foreign_commit(self, repo: Repo, branch: str) -> str:
        head = repo.branches[branch]
        files = dict(repo.files_at(head))
        files["NOTES.md"] = _regular(f"someone else was here ({len(repo.commits)})\n".encode())
        cid = self._new_commit(repo, head, files, "a concurrent commit")
        repo.branches[branch] = cid
        return cid

    def read_file(self, repo_id: str, rev: str, path: str) -> bytes:
        repo = self.repos[repo_id]
        f = repo.files_at(self.resolve(repo, rev))[path]
        return self.lfs[f["lfs"]] if f.get("lfs") else f["content"]

    def history(self, repo_id: str, branch: str = "main") -> list[str]:
        repo = self.repos[repo_id]
        out, c = [], repo.branches[branch]
        while c:
            out.append(c)
            c = repo.commits[c]["parent"]
        return out


def _regular(data: bytes) -> dict:
    return {"oid": git_sha1(data), "size": len(data), "content": data, "lfs": None}


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    # -- plumbing ----------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(
        self, status: int, payload: Any = None, raw: bytes | None = None, headers: dict | None = None
    ) -> None:
        data = raw if raw is not None else json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header(
            "Content-Type", "application/octet-stream" if raw is not None else "application/json"
        )
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.hub.responses[f"{self._endpoint} {status}"] += 1

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers=headers)

    def _drop(self) -> None:
        """Simulate a network failure: close the socket without answering."""
        self.close_connection = True
        self.hub.responses[f"{self._endpoint} dropped"] += 1
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def _authed(self) -> bool:
        auth = self.headers.get("Authorization")
        self.hub.auth_seen.append(auth)
        return auth == f"Bearer {self.hub.token}"

    def _repo(self, repo_id: str, write: bool = False) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        authed = self._authed()
        if repo is None or (repo.private and not authed):
            self._error(404, f"Repository Not Found for url: {self.path}", "RepoNotFound")
            return None
        if write and not authed:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        return repo

    def _revision(self, repo_id: str, rev: str, write: bool = False) -> tuple[Repo, str] | None:
        """The repo and the commit `rev` names in it; None once the 404 (or 401) is sent."""
        r = self._repo(repo_id, write)
        if r is None:
            return None
        cid = self.hub.resolve(r, rev)
        if cid is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return None
        return r, cid

    # -- routing -----------------------------------------------------------------------------------
    _ROUTES = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/refs", "refs"),
        ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/commits/(?P<rev>[^/]+)", "commits"),
        ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tag/(?P<rev>[^/]+)", "tag"),
        ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/branch/(?P<branch>[^/]+)", "branch"),
        ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("POST", r"/datasets/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        ("POST", r"/_lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
        ("GET", r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self._query = parse_qs(parts.query)
        for m, pattern, name in self._ROUTES:
            match = re.fullmatch(pattern, parts.path)
            if m == method and match:
                self._endpoint = name
                self.hub.calls[name] += 1
                kwargs = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                with self.hub.lock:
                    getattr(self, f"h_{name}")(**kwargs)
                return
        self._endpoint = "unknown"
        self.hub.calls[f"unknown {method} {parts.path}"] += 1
        self._body()
        self._error(404, f"fake hub: no route for {method} {parts.path}")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    # -- endpoints ---------------------------------------------------------------------------------
    def h_create_repo(self) -> None:
        body = json.loads(self._body() or b"{}")
        if not self._authed():
            return self._error(401, "Invalid credentials in Authorization header")
        repo_id = (
            f"{body.get('organization')}/{body['name']}"
            if body.get("organization")
            else f"user/{body['name']}"
        )
        url = f"{self.hub.url}/datasets/{repo_id}"
        if repo_id in self.hub.repos:
            return self._send(409, {"error": "You already created this dataset repo", "url": url})
        private = bool(body.get("private")) or body.get("visibility") == "private"
        self.hub.create(repo_id, private)
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def h_validate_yaml(self) -> None:
        body = json.loads(self._body() or b"{}")
        content = body.get("content", "")
        m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        if not m:
            return self._send(
                200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
            )
        try:
            meta = yaml.safe_load(m.group(1))
            assert isinstance(meta, dict), "metadata is not a mapping"
            for cfg in meta.get("configs", []):
                assert "config_name" in cfg and "data_files" in cfg, "configs need config_name and data_files"
        except Exception as e:  # noqa: BLE001 - any problem is a validation error
            return self._send(400, {"errors": [{"message": str(e)}]})
        self._send(200, {"errors": [], "warnings": []})

    def h_repo_info(self, repo: str, rev: str = "main") -> None:
        found = self._revision(repo, rev)
        if found is None:
            return
        r, cid = found
        files = r.files_at(cid)
        self._send(
            200,
            {
                "id": repo,
                "author": repo.split("/")[0],
                "sha": cid,
                "private": r.private,
                "disabled": False,
                "gated": False,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(files)],
            },
        )

    def h_refs(self, repo: str) -> None:
        r = self._repo(repo)
        if r is None:
            return
        self._send(
            200,
            {
                "branches": [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                    for b, c in sorted(r.branches.items())
                ],
                "tags": [
                    {"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in sorted(r.tags.items())
                ],
                "converts": [],
            },
        )

    def h_commits(self, repo: str, rev: str) -> None:
        """A branch's commits, newest first (one page: the stand-in's histories are short)."""
        found = self._revision(repo, rev)
        if found is None:
            return
        r, cid = found
        out: list[dict] = []
        while cid is not None:
            c = r.commits[cid]
            out.append(
                {
                    "id": cid,
                    "authors": [{"user": "sbs-test"}],
                    "date": "2025-01-01T00:00:00.000Z",
                    "title": c["message"],
                    "message": c.get("description", ""),
                }
            )
            cid = c["parent"]
        self._send(200, out)

    def _entries(self, files: dict[str, dict], paths: list[str]) -> list[dict]:
        out = []
        for p in paths:
            f = files[p]
            e = {"type": "file", "path": p, "oid": f["oid"], "size": f["size"]}
            if f.get("lfs"):
                e["lfs"] = {"oid": f["lfs"], "size": f["size"], "pointerSize": 134}
            out.append(e)
        return out

    def h_tree(self, repo: str, rev: str, path: str = "") -> None:
        found = self._revision(repo, rev)
        if found is None:
            return
        r, cid = found
        files = r.files_at(cid)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        recursive = self._query.get("recursive", ["false"])[0].lower() in ("1", "true")
        paths = sorted(p for p in files if p.startswith(prefix))
        if not recursive:
            paths = [p for p in paths if "/" not in p[len(prefix) :]]
        dirs = sorted(
            {
                prefix + p[len(prefix) :].split("/")[0]
                for p in files
                if p.startswith(prefix) and "/" in p[len(prefix) :]
            }
        )
        entries = [
            {"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in dirs
        ] + self._entries(files, paths)
        self._send(200, entries)

    def h_paths_info(self, repo: str, rev: str) -> None:
        form = parse_qs(self._body().decode())
        found = self._revision(repo, rev)
        if found is None:
            return
        r, cid = found
        files = r.files_at(cid)
        self._send(200, self._entries(files, [p for p in form.get("paths", []) if p in files]))

    def h_preupload(self, repo: str, rev: str) -> None:
        body = json.loads(self._body() or b"{}")
        r = self._repo(repo, write=True)
        if r is None:
            return
        cid = self.hub.resolve(r, rev)
        files = r.files_at(cid) if cid else {}
        out = []
        for f in body.get("files", []):
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 * 1024 * 1024
            existing = files.get(f["path"])
            oid = None
            if existing is not None:
                oid = existing["lfs"] if existing.get("lfs") else existing["oid"]
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        self._send(200, {"files": out, "commitOid": cid})

    def h_lfs_batch(self, repo: str) -> None:
        body = json.loads(self._body() or b"{}")
        if self._repo(repo, write=True) is None:
            return
        objects = []
        for o in body.get("objects", []):
            if o["oid"] in self.hub.lfs:
                objects.append({"oid": o["oid"], "size": o["size"]})
            else:
                objects.append(
                    {
                        "oid": o["oid"],
                        "size": o["size"],
                        "authenticated": True,
                        "actions": {
                            "upload": {"href": f"{self.hub.url}/_lfs/{o['oid']}"},
                            "verify": {"href": f"{self.hub.url}/_lfs/{o['oid']}/verify"},
                        },
                    }
                )
        self._send(200, {"transfer": "basic", "objects": objects})

    def h_lfs_put(self, oid: str) -> None:
        data = self._body()
        if self.hub.drop_lfs_puts > 0:
            self.hub.drop_lfs_puts -= 1
            return self._drop()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "sha256 mismatch")
        self.hub.lfs[oid] = data
        self._send(200, {})

    def h_lfs_verify(self, oid: str) -> None:
        body = json.loads(self._body() or b"{}")
        if oid not in self.hub.lfs or body.get("size") != len(self.hub.lfs[oid]):
            return self._error(404, "object not found")
        self._send(200, {})

    def h_commit(self, repo: str, rev: str) -> None:
        lines = [json.loads(x) for x in self._body().splitlines() if x.strip()]
        r = self._repo(repo, write=True)
        if r is None:
            return
        if self.hub.drop_commits > 0:
            self.hub.drop_commits -= 1
            return self._drop()
        if rev not in r.branches:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        if self.hub.concurrent_commits > 0:
            self.hub.concurrent_commits -= 1
            self.hub.foreign_commit(r, rev)
        head = r.branches[rev]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        parent = header.get("parentCommit")
        if parent and not head.startswith(parent):
            return self._error(412, "A commit has happened since. Please refresh and try again.")
        files = dict(r.files_at(head))
        for x in lines:
            k, val = x["key"], x["value"]
            if k == "file":
                files[val["path"]] = _regular(base64.b64decode(val["content"]))
            elif k == "lfsFile":
                if val["oid"] not in self.hub.lfs:
                    return self._error(422, f"LFS object {val['oid']} was never uploaded")
                files[val["path"]] = {
                    "oid": git_sha1(val["oid"].encode()),
                    "size": val["size"],
                    "lfs": val["oid"],
                }
            elif k == "deletedFile":
                if val["path"] not in files:
                    return self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[val["path"]]
            elif k == "deletedFolder":
                for p in [p for p in files if p.startswith(val["path"].rstrip("/") + "/")]:
                    del files[p]
        cid = self.hub._new_commit(r, head, files, header.get("summary", ""), header.get("description", ""))
        r.branches[rev] = cid
        self._send(
            200,
            {"success": True, "commitOid": cid, "commitUrl": f"{self.hub.url}/datasets/{repo}/commit/{cid}"},
        )

    def h_tag(self, repo: str, rev: str) -> None:
        body = json.loads(self._body() or b"{}")
        found = self._revision(repo, rev, write=True)
        if found is None:
            return
        r, cid = found
        if body["tag"] in r.tags:
            return self._error(409, f"Tag {body['tag']} already exists")
        r.tags[body["tag"]] = cid
        self._send(200, {})

    def h_branch(self, repo: str, branch: str) -> None:
        body = json.loads(self._body() or b"{}")
        r = self._repo(repo, write=True)
        if r is None:
            return
        if branch in r.branches:
            return self._error(409, f"Branch {branch} already exists")
        start = self.hub.resolve(r, body.get("startingPoint") or "main")
        r.branches[branch] = start
        self._send(200, {})

    def h_resolve(self, repo: str, rev: str, path: str) -> None:
        r = self._repo(repo)
        if r is None:
            return
        cid = self.hub.resolve(r, rev)
        if cid is None or path not in r.files_at(cid):
            return self._error(404, "Entry not found", "EntryNotFound")
        self._send(200, raw=self.hub.read_file(repo, cid, path))
