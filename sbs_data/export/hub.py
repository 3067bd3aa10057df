"""Push an export to the Hugging Face Hub as one atomic commit, tag it with the version, record it.

Why this shape:
- One `upload_folder` commit with `parent_commit` = the branch head we looked at: a concurrent commit makes the
  Hub answer 412 instead of silently interleaving; we then re-read the head and retry (tenacity; also on 409,
  429, 5xx and dropped connections). Stale shards of an earlier push are deleted in the same commit.
- Idempotent: a push whose tag already marks identical files (or that the workspace already recorded) makes
  no commit at all; `huggingface_hub` also skips unchanged files, so re-uploading equal content is a no-op.
- The token comes from `HF_TOKEN` or the saved login (`huggingface_hub.get_token`) and is only handed to the
  client; it is never printed, written to the card/manifest, or stored in the workspace.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import duckdb

from sbs_data import SbsError, __version__
from sbs_data.export.options import ExportOptions
from sbs_data.export.shards import _sha256, export, folder_fingerprint
from sbs_data.workspace import Version, Workspace

RETRY_STATUS = {409, 412, 429, 500, 502, 503, 504}
SHARD_PATTERNS = ["*/part-*.parquet", "*/part-*.jsonl"]


@dataclass
class PushResult:
    ref: str
    repo: str
    revision: str
    commit_id: str
    tag: str
    status: str  # pushed | unchanged | branched (the same export, a new branch at its tag)
    url: str
    attempts: int

    def as_row(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "repo": self.repo,
            "revision": self.revision,
            "commit": self.commit_id,
            "tag": self.tag,
            "status": self.status,
            "attempts": self.attempts,
            "url": self.url,
        }


def default_tag(v: Version) -> str:
    """`cqa-palm@3` -> `cqa-palm-v3` (git tags may not hold every character a ref can)."""
    return f"{v.dataset}-v{v.num}"


#: What git's check-ref-format refuses anywhere in a ref name: controls, space, ~ ^ : ? * [ \\ and DEL.
_REF_BAD_CHARS = frozenset(" ~^:?*[\\\x7f") | frozenset(chr(i) for i in range(32))
MAX_REF_CHARS = 255


def ref_name_problem(name: str) -> str | None:
    """Why `name` is not a valid git branch or tag name (git check-ref-format's rules, plus `--branch`'s: not
    `HEAD`, not starting with '-'), or None when it is one. Linear time."""
    if not name:
        return "it is empty"
    if len(name) > MAX_REF_CHARS:
        return f"it is longer than {MAX_REF_CHARS} characters"
    bad = next((c for c in name if c in _REF_BAD_CHARS), None)
    if bad is not None:
        return f"it holds {bad!r} (no spaces, control characters or any of ~ ^ : ? * [ \\)"
    if name == "@":
        return "'@' alone is not a name"
    if "@{" in name:
        return "it holds '@{'"
    if name == "HEAD":
        return "HEAD names whatever is checked out, not a branch"
    if name.startswith("-"):
        return "it starts with '-'"
    if ".." in name:
        return "it holds '..'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it starts or ends with '/', or holds '//'"
    if name.endswith("."):
        return "it ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return f"a part of it ({part!r}) starts with '.'"
        if part.endswith(".lock"):
            return f"a part of it ({part!r}) ends with '.lock'"
    return None


def check_ref_name(name: str, flag: str, what: str) -> str:
    """`name` when it is a valid git ref name, else an SbsError naming the option (`--revision`)."""
    why = ref_name_problem(name)
    if why is not None:
        raise SbsError(f"{flag} {name!r} is not a valid {what} name: {why}")
    return name


def _public_endpoint(endpoint: str) -> str:
    """The endpoint without any user:password@ part, safe to store."""
    parts = urlsplit(endpoint)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def is_transient(exc: BaseException) -> bool:
    """409/412/429/5xx from the Hub, or a dropped connection anywhere in the exception chain."""
    import httpx2

    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if _status(e) in RETRY_STATUS:
            return True
        if isinstance(e, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return True
        e = e.__cause__ or e.__context__
    return False


def _verify_export(folder: Path, v: Version) -> dict[str, Any]:
    """Check that a folder holds an intact export of `v` before uploading it."""
    mpath = folder / "manifest.json"
    if not mpath.is_file() or not (folder / "README.md").is_file():
        raise SbsError(f"--from-export {folder}: no manifest.json/README.md; run `sbs-data export` first")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    if manifest.get("source") != v.ref:
        raise SbsError(f"--from-export {folder}: it holds an export of {manifest.get('source')}, not {v.ref}")
    for split, info in manifest.get("splits", {}).items():
        for shard in info.get("shards", []):
            p = folder / shard["path"]
            if not p.is_file() or _sha256(p) != shard["sha256"]:
                raise SbsError(
                    f"--from-export {folder}: {shard['path']} is missing or changed since export (split {split})"
                )
    return manifest


def commit_title(v: Version) -> str:
    """The title of a push's Hub commit; with the fingerprint in its description, it identifies the commit."""
    return f"sbs-data: {v.ref}"


def _fingerprint_line(fingerprint: str) -> str:
    return f"Files fingerprint {fingerprint}."


def _write_intent(
    ws: Workspace, intent_id: str, v: Version, where: dict[str, Any], parent: str | None
) -> None:
    """Record, before the Hub commit, that this push is about to make one (replacing its earlier attempt's)."""
    with ws.transaction():
        ws.execute("DELETE FROM sbs_push_intents WHERE intent_id = ?", [intent_id])
        ws.execute(
            "INSERT INTO sbs_push_intents (intent_id, version_id, ref, endpoint, repo, revision, tag, private, "
            "parent_commit, fingerprint, files, rows, toolkit_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [intent_id, v.version_id, v.ref, where["endpoint"], where["repo"], where["revision"], where["tag"],
             where["private"], parent, where["fingerprint"], where["files"], where["rows"], __version__],
        )  # fmt: skip


def reconcile(ws: Workspace, api: Any, repo: str, endpoint: str, say: Callable[[str], None]) -> list[str]:
    """Record the Hub commits that earlier pushes to `repo` made but never recorded (they were interrupted or
    killed after the commit): each intent left behind is looked for on its branch, newest first down to the
    head it built on, by its commit title and fingerprint. Found: recorded as a new commit, and its tag is
    created if missing. Not found: the commit never happened, and the intent is dropped. Returns the commits
    recorded."""
    intents = ws.all(
        "SELECT intent_id, version_id, ref, revision, tag, private, parent_commit, fingerprint, files, rows, "
        "toolkit_version FROM sbs_push_intents WHERE repo = ? AND endpoint = ? ORDER BY created_at",
        [repo, endpoint],
    )
    done: list[str] = []
    for iid, vid, ref, branch, tag, private, parent, fingerprint, files, rows, toolkit in intents:
        found = None
        try:
            commits = api.list_repo_commits(repo, repo_type="dataset", revision=branch)
        except Exception as e:  # noqa: BLE001 - a branch that is gone holds no commit of ours
            if _status(e) != 404:
                raise
            commits = []
        for c in commits:
            if c.commit_id == parent:
                break
            if c.title == f"sbs-data: {ref}" and _fingerprint_line(fingerprint) in (c.message or ""):
                found = c.commit_id
                break
        recorded = found is not None and ws.one(
            "SELECT count(*) FROM sbs_pushes WHERE repo = ? AND endpoint = ? AND commit_id = ?",
            [repo, endpoint, found],
        )
        if found is not None and tag:
            refs = api.list_repo_refs(repo, repo_type="dataset")
            if not any(t.name == tag for t in refs.tags):
                api.create_tag(
                    repo, repo_type="dataset", tag=tag, revision=found, tag_message=ref, exist_ok=True
                )
        with ws.transaction():
            if found is not None and not recorded:
                ws.execute(
                    "INSERT INTO sbs_pushes (version_id, ref, endpoint, repo, revision, commit_id, tag, private, "
                    "new_commit, fingerprint, files, rows, toolkit_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, true, ?, ?, ?, ?)",
                    [vid, ref, endpoint, repo, branch, found, tag, private, fingerprint, files, rows, toolkit],
                )  # fmt: skip
            ws.execute("DELETE FROM sbs_push_intents WHERE intent_id = ?", [iid])
        if found is not None and not recorded:
            say(
                f"recorded commit {found[:12]} of an earlier push of {ref} to {repo}@{branch} that was interrupted"
            )
            done.append(found)
    return done


@dataclass
class HubTarget:
    """Where a push goes: the dataset repo, its visibility, the branch and tag, and the Hub to reach."""

    repo: str  # ORG/NAME, created if missing
    private: bool = False  # create it private; refuse to push into a public one
    revision: str | None = None  # the branch (default main)
    tag: str | None = None  # default NAME-vN
    token: str | None = None  # default HF_TOKEN or the saved login
    endpoint: str | None = None  # default HF_ENDPOINT or the public Hub


def push(
    ws: Workspace,
    ref: str,
    target: HubTarget | str,
    opts: ExportOptions | None = None,
    *,
    from_export: str | Path | None = None,
    out: str | Path | None = None,
    max_attempts: int = 6,
    wait_max: float = 8.0,
    log: Callable[[str], None] | None = None,
) -> PushResult:
    """Export `ref` with `opts` (or reuse `from_export`) and commit it to the dataset repo of `target`."""
    target = HubTarget(target) if isinstance(target, str) else target
    repo, private, revision, tag = target.repo, target.private, target.revision, target.tag
    token, endpoint = target.token, target.endpoint
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.hf_api import RepoFile
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

    say = log or (lambda _m: None)
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise SbsError(f"--repo {repo!r}: expected ORG/NAME")
    if revision is not None:  # checked here, before any network call: the Hub's answer would be a 4xx later
        check_ref_name(revision, "--revision", "branch")
    if tag is not None:
        check_ref_name(tag, "--tag", "tag")
    if ws.read_only:
        raise SbsError("push records the commit in the workspace; open it writable")
    v = ws.get(ref)
    token = token or get_token()
    if not token:
        raise SbsError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    api = HfApi(endpoint=endpoint, token=token)
    endpoint = api.endpoint
    branch = revision or "main"
    tag = tag or check_ref_name(default_tag(v), "the default tag", "tag")

    with tempfile.TemporaryDirectory(prefix="sbs-push-") as tmp:
        if from_export is not None:
            folder = Path(from_export)
            manifest = _verify_export(folder, v)
        else:
            folder = Path(out) if out is not None else Path(tmp) / "export"
            manifest = export(ws, v.ref, folder, opts).manifest
        fingerprint = folder_fingerprint(folder)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        rows = sum(s["rows"] for s in manifest["splits"].values())

        intent_id = uuid.uuid4().hex
        public = _public_endpoint(endpoint)

        def record(commit_id: str, new_commit: bool) -> None:
            with ws.transaction():
                ws.execute("DELETE FROM sbs_push_intents WHERE intent_id = ?", [intent_id])
                ws.execute(
                    "INSERT INTO sbs_pushes (version_id, ref, endpoint, repo, revision, commit_id, tag, private, "
                    "new_commit, fingerprint, files, rows, toolkit_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [v.version_id, v.ref, public, repo, branch, commit_id, tag, private,
                     new_commit, fingerprint, len(files), rows, __version__],
                )  # fmt: skip

        def result(commit_id: str, status: str, attempts: int) -> PushResult:
            url = f"{endpoint}/datasets/{repo}/tree/{tag}"
            return PushResult(v.ref, repo, branch, commit_id, tag, status, url, attempts)

        attempts = 0

        def remote_refs() -> tuple[str | None, str | None]:
            """(commit of our tag, head of our branch), None where missing."""
            refs = api.list_repo_refs(repo, repo_type="dataset")
            tagged = next((t.target_commit for t in refs.tags if t.name == tag), None)
            return tagged, next((b.target_commit for b in refs.branches if b.name == branch), None)

        def remote_tag() -> str | None:
            return remote_refs()[0]

        def same_files(commit_id: str) -> bool:
            remote = {
                f.path: (f.lfs.sha256 if f.lfs else f.blob_id)
                for f in api.get_paths_info(repo, files, repo_type="dataset", revision=commit_id)
                if isinstance(f, RepoFile)  # the paths are files; a folder has no content id
            }
            local = {
                f: (
                    _sha256(folder / f)
                    if remote.get(f) and len(remote[f]) == 64
                    else _git_blob_sha1(folder / f)
                )
                for f in files
            }
            return remote == local

        def attempt() -> PushResult:
            nonlocal attempts
            attempts += 1
            say(f"push {v.ref} -> {repo}@{branch} (attempt {attempts})")
            api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
            info = api.repo_info(repo, repo_type="dataset")
            if private and not info.private:
                raise SbsError(f"{repo} exists and is public; refusing a --private push into it")
            reconcile(ws, api, repo, public, say)
            tagged, branch_head = remote_refs()
            known = ws.all(
                "SELECT commit_id FROM sbs_pushes WHERE repo = ? AND revision = ? AND version_id = ? AND tag = ? "
                "AND fingerprint = ? AND endpoint = ? ORDER BY push_id DESC LIMIT 1",
                [repo, branch, v.version_id, tag, fingerprint, public],
            )
            retag = True
            if tagged is not None:
                if known and known[0][0] == tagged and branch_head is not None:
                    return result(tagged, "unchanged", attempts)
                if not same_files(tagged):
                    raise SbsError(
                        f"{repo}: tag {tag} already marks a different export of {v.ref} (other export options?); "
                        "pass --tag NAME to push it under another tag"
                    )
                if branch_head is None:  # the same export, wanted on a new branch: start it at the tag
                    api.create_branch(repo, repo_type="dataset", branch=branch, revision=tagged)
                    record(tagged, False)
                    return result(tagged, "branched", attempts)
                if branch_head == tagged or same_files(branch_head):
                    record(branch_head, False)
                    return result(branch_head, "unchanged", attempts)
                retag = False  # the branch holds something else: commit there; the tag stays where it is
            if branch != "main" and branch_head is None:
                api.create_branch(repo, repo_type="dataset", branch=branch, exist_ok=True)
            head = api.repo_info(repo, repo_type="dataset", revision=branch).sha
            where = {"endpoint": public, "repo": repo, "revision": branch, "tag": tag,
                     "private": private, "fingerprint": fingerprint, "files": len(files), "rows": rows}  # fmt: skip
            _write_intent(ws, intent_id, v, where, head)
            commit = api.upload_folder(
                repo_id=repo,
                repo_type="dataset",
                folder_path=folder,
                revision=branch,
                commit_message=commit_title(v),
                commit_description=(
                    f"Export of {v.ref} ({manifest['task']}, {rows} rows, label source {manifest['label_source']}) "
                    f"by sbs-data {__version__}. {_fingerprint_line(fingerprint)}"
                ),
                parent_commit=head,
                delete_patterns=SHARD_PATTERNS,
            )
            commit_id = commit.oid
            if retag:
                api.create_tag(
                    repo,
                    repo_type="dataset",
                    tag=tag,
                    revision=commit_id,
                    tag_message=f"{v.ref}",
                    exist_ok=True,
                )
                if remote_tag() != commit_id:
                    raise SbsError(f"{repo}: tag {tag} was created concurrently on another commit")
            record(commit_id, commit_id != head)
            return result(commit_id, "pushed" if commit_id != head else "unchanged", attempts)

        try:
            retrying = Retrying(
                stop=stop_after_attempt(max_attempts),
                wait=wait_exponential(multiplier=0.5, min=0.2, max=wait_max),
                retry=retry_if_exception(is_transient),
                reraise=True,
            )
            return retrying(attempt)
        except (
            SbsError,
            duckdb.InterruptException,
        ):  # Ctrl-C inside a query is an interruption, not a failure
            raise
        except Exception as e:
            status = _status(e)
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if status in (401, 403):
                raise SbsError(
                    f"{repo}: the Hub refused the token ({status}); check HF_TOKEN or `hf auth login`"
                ) from None
            raise SbsError(f"push of {v.ref} to {repo} failed after {attempts} attempt(s): {msg}") from None
