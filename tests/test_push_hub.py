"""`sbs-data push` with the real huggingface_hub client against a loopback stand-in Hub (tests/fake_hub_server.py).

Each push runs the CLI in a subprocess: huggingface_hub reads HF_ENDPOINT / HF_HUB_DISABLE_XET when imported,
and other test modules in this pytest process may have imported it (or `datasets`) already.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from export_helpers import build
from fake_hub_server import FakeHub

from sbs_data import SbsError
from sbs_data.export.options import ExportOptions
from sbs_data.workspace import Workspace

TOKEN = "hf_SbsTestSecretToken0123456789abcdef"
REPO = "sbs-org/svamp-distill"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ws.duckdb"
    with Workspace.open(path) as ws:
        build(ws, n_train=8, n_test=2, samples=2)
    return path


@pytest.fixture
def hub():
    with FakeHub(token=TOKEN) as h:
        yield h


def run_push(
    hub: FakeHub,
    db: Path,
    *args: str,
    token: str | None = TOKEN,
    home: Path | None = None,
    prelude: str | None = None,
) -> subprocess.CompletedProcess:
    """`sbs-data push sv-gen@1 --repo REPO --db DB --format json ARGS` in a subprocess; `prelude` is Python run
    in it first (to arm a fault inside the client)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(home or db.parent / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_COLOR="1",
    )
    if token:
        env["HF_TOKEN"] = token
    launch = ["-m", "sbs_data.cli"]
    if prelude is not None:
        launch = [
            "-c",
            f"{prelude}\nimport sys\nfrom sbs_data.cli import main\nsys.argv[0] = 'sbs-data'\nmain()",
        ]
    cmd = [
        sys.executable,
        *launch,
        "push",
        "sv-gen@1",
        "--repo",
        REPO,
        "--db",
        str(db),
        "--format",
        "json",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("[") :])[0]


def pushes(db: Path) -> list[tuple]:
    with Workspace.open(db, read_only=True) as ws:
        return ws.all(
            "SELECT ref, repo, revision, commit_id, tag, private, new_commit FROM sbs_pushes ORDER BY push_id"
        )


def assert_no_token_anywhere(db: Path, *texts: str, folders: tuple[Path, ...] = ()) -> None:
    for t in texts:
        assert TOKEN not in t
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file():
                assert TOKEN.encode() not in p.read_bytes(), p
    assert TOKEN.encode() not in db.read_bytes()
    with Workspace.open(
        db, read_only=True
    ) as ws:  # strings may be compressed on disk: ask every text column too
        cols = ws.all(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main' "
            "AND data_type IN ('VARCHAR', 'JSON') AND table_name IN (SELECT table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE')"
        )
        for table, col in cols:
            hits = ws.one(
                f'SELECT count(*) FROM "{table}" WHERE contains(CAST("{col}" AS VARCHAR), ?)', [TOKEN]
            )
            assert hits == 0, (table, col)


def test_first_push_then_idempotent_repush(hub, db, tmp_path):
    proc = run_push(hub, db, "--out", str(tmp_path / "kept"))
    r = result(proc)
    repo = hub.repos[REPO]
    head = repo.branches["main"]
    assert r["status"] == "pushed" and r["commit"] == head and r["tag"] == "sv-gen-v1"
    assert repo.tags == {"sv-gen-v1": head} and not repo.private
    assert len(hub.history(REPO)) == 2  # the Hub's initial commit + ours: one atomic commit
    files = repo.files_at(head)
    manifest = json.loads(hub.read_file(REPO, head, "manifest.json"))
    shard_paths = [s["path"] for sp in manifest["splits"].values() for s in sp["shards"]]
    assert set(files) == {".gitattributes", "README.md", "manifest.json", *shard_paths}
    for sp in manifest["splits"].values():
        for s in sp["shards"]:
            assert files[s["path"]]["lfs"] == s["sha256"]  # parquet went through git-LFS, content intact
            assert hashlib.sha256(hub.read_file(REPO, head, s["path"])).hexdigest() == s["sha256"]
    assert hub.read_file(REPO, head, "README.md") == (tmp_path / "kept" / "README.md").read_bytes()
    assert all(a == f"Bearer {TOKEN}" for a in hub.auth_seen)  # HF_TOKEN was used for every call
    assert pushes(db) == [("sv-gen@1", REPO, "main", head, "sv-gen-v1", False, True)]
    calls = dict(hub.calls)

    again = result(run_push(hub, db))
    assert again["status"] == "unchanged" and again["commit"] == head
    assert len(hub.history(REPO)) == 2 and repo.branches["main"] == head
    assert hub.calls["commit"] == calls["commit"] and hub.calls["lfs_put"] == calls["lfs_put"]
    assert len(pushes(db)) == 1  # nothing new recorded for a no-op

    # a workspace that never recorded it (another machine) also sees the tag marks identical files
    with Workspace.open(db) as ws:
        ws.con.execute("DELETE FROM sbs_pushes")
    third = result(run_push(hub, db))
    assert third["status"] == "unchanged" and repo.branches["main"] == head
    assert hub.calls["commit"] == calls["commit"]
    assert pushes(db) == [("sv-gen@1", REPO, "main", head, "sv-gen-v1", False, False)]

    # other export options under the same tag: refused before any commit
    proc = run_push(hub, db, "--label-source", "teacher")
    assert proc.returncode == 1 and "already marks a different export" in proc.stderr
    assert repo.branches["main"] == head
    assert_no_token_anywhere(db, proc.stdout, proc.stderr, folders=(tmp_path / "kept",))


def test_stale_parent_412_is_retried(hub, db):
    result(run_push(hub, db, "--tag", "first"))
    first_head = hub.repos[REPO].branches["main"]
    # a different export (teacher labels) to the same repo; someone commits just before us
    hub.concurrent_commits = 1
    proc = run_push(hub, db, "--label-source", "teacher", "--tag", "second")
    r = result(proc)
    repo = hub.repos[REPO]
    assert hub.responses["commit 412"] == 1
    history = hub.history(REPO)
    assert r["commit"] == history[0] and r["attempts"] == 2
    foreign = repo.commits[history[1]]
    assert foreign["message"] == "a concurrent commit" and foreign["parent"] == first_head
    assert "NOTES.md" in repo.files_at(history[0])  # their change is kept, ours is on top
    assert json.loads(hub.read_file(REPO, "main", "manifest.json"))["label_source"] == "teacher"
    assert repo.tags["second"] == history[0] and repo.tags["first"] == first_head
    assert_no_token_anywhere(db, proc.stdout, proc.stderr)


def test_private_repo_with_saved_login_token(hub, db, tmp_path):
    home = tmp_path / "hf-login"
    home.mkdir()
    (home / "token").write_text(TOKEN)  # what `hf auth login` saves; no HF_TOKEN in the environment
    proc = run_push(hub, db, "--private", "--revision", "dev", token=None, home=home)
    r = result(proc)
    repo = hub.repos[REPO]
    assert repo.private and r["revision"] == "dev"
    assert repo.branches["dev"] == r["commit"] != repo.branches["main"]
    assert "manifest.json" in repo.files_at(repo.branches["dev"])
    assert "manifest.json" not in repo.files_at(repo.branches["main"])
    assert pushes(db)[0][2] == "dev" and pushes(db)[0][5] is True
    # a private repo is invisible without the token
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{hub.url}/api/datasets/{REPO}")
    assert e.value.code == 404
    assert_no_token_anywhere(db, proc.stdout, proc.stderr)


def test_refuses_private_push_into_public_repo_and_missing_token(hub, db):
    hub.create(REPO, private=False)
    proc = run_push(hub, db, "--private")
    assert proc.returncode == 1 and "is public" in proc.stderr
    assert len(hub.history(REPO)) == 1
    proc = run_push(hub, db, token=None)
    assert proc.returncode == 1 and "HF_TOKEN" in proc.stderr and "Traceback" not in proc.stderr


def test_network_errors_mid_upload_then_retry(hub, db, tmp_path):
    hub.drop_lfs_puts = 1  # an LFS upload connection dies (huggingface_hub's own backoff retries it)
    hub.drop_commits = 1  # the commit call dies (our tenacity retry re-runs the push)
    proc = run_push(hub, db, "--out", str(tmp_path / "kept"))
    r = result(proc)
    assert hub.responses["lfs_put dropped"] == 1 and hub.responses["commit dropped"] == 1
    assert r["status"] == "pushed" and r["attempts"] == 2
    assert len(hub.history(REPO)) == 2  # exactly one commit despite the retries
    manifest = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    for sp in manifest["splits"].values():
        for s in sp["shards"]:
            assert hashlib.sha256(hub.read_file(REPO, "main", s["path"])).hexdigest() == s["sha256"]
    assert_no_token_anywhere(db, proc.stdout, proc.stderr, folders=(tmp_path / "kept",))


def test_push_from_export_replaces_stale_shards(hub, db, tmp_path):
    """Reusing an export folder; a later push with fewer shards deletes the old ones in the same commit."""
    env_db = db
    small = tmp_path / "small"
    with Workspace.open(env_db) as ws:
        from sbs_data.export.shards import export

        export(ws, "sv-gen@1", tmp_path / "many", ExportOptions(max_rows_per_shard=3))
        export(ws, "sv-gen@1", small, ExportOptions(max_rows_per_shard=1000))
    result(run_push(hub, db, "--from-export", str(tmp_path / "many"), "--tag", "many"))
    many_files = set(hub.repos[REPO].files_at(hub.repos[REPO].branches["main"]))
    assert "train/part-00004.parquet" in many_files
    r = result(run_push(hub, db, "--from-export", str(small), "--tag", "small"))
    files = set(hub.repos[REPO].files_at(r["commit"]))
    assert {f for f in files if "/part-" in f} == {"train/part-00000.parquet", "test/part-00000.parquet"}
    (small / "train" / "part-00000.parquet").write_bytes(b"tampered")
    proc = run_push(hub, db, "--from-export", str(small), "--tag", "x")
    assert proc.returncode == 1 and "changed since export" in proc.stderr


def test_same_export_on_another_branch(hub, db):
    """A push to --revision dev of what main already holds makes the branch (at the tag), not "unchanged"."""
    main = result(run_push(hub, db))
    repo = hub.repos[REPO]
    commits = hub.calls["commit"]
    dev = result(run_push(hub, db, "--revision", "dev"))
    assert dev["status"] == "branched" and dev["commit"] == main["commit"]
    assert repo.branches["dev"] == main["commit"] and hub.calls["commit"] == commits
    again = result(run_push(hub, db, "--revision", "dev"))
    assert again["status"] == "unchanged" and hub.calls["commit"] == commits
    assert [p[2] for p in pushes(db)] == ["main", "dev"]

    # a branch holding another export gets a commit of this one; the tag stays on main's commit
    other = result(
        run_push(hub, db, "--revision", "exp", "--tag", "teacher-labels", "--label-source", "teacher")
    )
    assert other["status"] == "pushed" and repo.branches["exp"] == other["commit"]
    back = result(run_push(hub, db, "--revision", "exp"))
    assert back["status"] == "pushed" and repo.branches["exp"] == back["commit"] != other["commit"]
    assert repo.tags["sv-gen-v1"] == main["commit"] and repo.tags["teacher-labels"] == other["commit"]


@pytest.mark.parametrize(
    "revision, why",
    [
        ("../main", "it holds '..'"),
        ("a b", "it holds ' '"),
        ("HEAD", "HEAD names whatever is checked out"),
        ("x@{1}", "it holds '@{'"),
        ("-x", "starts with '-'"),
        ("feat/.x", "starts with '.'"),
        ("v1.lock", "ends with '.lock'"),
        ("a//b", "holds '//'"),
        ("x.", "ends with '.'"),
        ("x\x01", "control characters"),
    ],
)
def test_a_revision_git_would_refuse_is_refused_before_any_network_call(hub, db, revision, why):
    from sbs_data.export.hub import HubTarget, push

    with Workspace.open(db) as ws, pytest.raises(SbsError) as e:
        push(ws, "sv-gen@1", HubTarget(REPO, revision=revision, token=TOKEN, endpoint=hub.url))
    assert str(e.value).startswith(f"--revision {revision!r} is not a valid branch name: ")
    assert why in str(e.value) and not hub.calls


def test_a_bad_revision_or_tag_is_one_clear_line_from_the_cli(hub, db):
    proc = run_push(hub, db, "--revision", "../main")
    assert proc.returncode == 1 and "--revision '../main' is not a valid branch name" in proc.stderr
    assert "Traceback" not in proc.stderr and not hub.calls
    proc = run_push(hub, db, "--tag", "v1 final")
    assert proc.returncode == 1 and "--tag 'v1 final' is not a valid tag name" in proc.stderr
    assert not hub.calls and pushes(db) == []


#: Ctrl-C right after the Hub commit, before the push is tagged and recorded: as Python raises it, and as
#: DuckDB raises it when the signal lands inside a query.
_CTRL_C = {
    "keyboard": "raise KeyboardInterrupt",
    "duckdb": "import duckdb; raise duckdb.InterruptException('INTERRUPT Error: Query interrupted')",
}


@pytest.mark.parametrize("how", sorted(_CTRL_C))
def test_ctrl_c_after_the_commit_is_one_line_and_the_next_push_records_the_commit(hub, db, how):
    prelude = (
        "import huggingface_hub\n"
        "def _interrupt(*a, **k):\n"
        f"    {_CTRL_C[how]}\n"
        "huggingface_hub.HfApi.create_tag = _interrupt\n"
    )
    proc = run_push(hub, db, prelude=prelude)
    assert proc.returncode == 130 and "Interrupted" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )
    repo = hub.repos[REPO]
    ours = repo.branches["main"]
    assert len(hub.history(REPO)) == 2 and repo.tags == {} and pushes(db) == []  # made, never recorded
    with Workspace.open(db, read_only=True) as ws:
        assert ws.one("SELECT count(*) FROM sbs_push_intents") == 1
    again = run_push(hub, db)
    r = result(again)
    assert f"recorded commit {ours[:12]} of an earlier push of sv-gen@1" in again.stderr
    assert r["commit"] == ours and r["status"] == "unchanged" and repo.tags == {"sv-gen-v1": ours}
    assert len(hub.history(REPO)) == 2  # no second commit
    assert pushes(db) == [("sv-gen@1", REPO, "main", ours, "sv-gen-v1", False, True)]
    with Workspace.open(db, read_only=True) as ws:
        assert ws.one("SELECT count(*) FROM sbs_push_intents") == 0


def test_an_intent_whose_commit_never_happened_is_dropped(hub, db):
    prelude = (
        "import huggingface_hub\n"
        "def _interrupt(*a, **k):\n"
        "    raise KeyboardInterrupt\n"
        "huggingface_hub.HfApi.upload_folder = _interrupt\n"
    )
    proc = run_push(hub, db, prelude=prelude)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    assert len(hub.history(REPO)) == 1 and pushes(db) == []
    r = result(run_push(hub, db))
    assert r["status"] == "pushed" and len(hub.history(REPO)) == 2
    assert [p[-1] for p in pushes(db)] == [True]
    with Workspace.open(db, read_only=True) as ws:
        assert ws.one("SELECT count(*) FROM sbs_push_intents") == 0
