-- 004: what was exported where, and what was pushed to the Hugging Face Hub (repo, revision, commit, tag).
-- Never holds credentials: the token is read from HF_TOKEN / the user's login at push time only.

CREATE SEQUENCE IF NOT EXISTS sbs_export_seq START 1;
CREATE SEQUENCE IF NOT EXISTS sbs_push_seq START 1;

CREATE TABLE sbs_exports (
    export_id    INTEGER PRIMARY KEY DEFAULT nextval('sbs_export_seq'),
    version_id   INTEGER NOT NULL,
    ref          VARCHAR NOT NULL,       -- NAME@N at export time
    path         VARCHAR NOT NULL,       -- absolute folder path
    file_format  VARCHAR NOT NULL,       -- parquet | jsonl
    label_source VARCHAR NOT NULL,       -- gold | teacher
    options      JSON,
    rows         BIGINT,
    fingerprint  VARCHAR NOT NULL,       -- sha256 over (path, sha256) of every file written
    exported_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE sbs_pushes (
    push_id      INTEGER PRIMARY KEY DEFAULT nextval('sbs_push_seq'),
    version_id   INTEGER NOT NULL,
    ref          VARCHAR NOT NULL,
    endpoint     VARCHAR NOT NULL,       -- Hub URL (no credentials)
    repo         VARCHAR NOT NULL,       -- ORG/NAME (dataset repo)
    revision     VARCHAR NOT NULL,       -- branch
    commit_id    VARCHAR NOT NULL,
    tag          VARCHAR,
    private      BOOLEAN,
    new_commit   BOOLEAN NOT NULL,       -- false when the Hub already held identical files
    fingerprint  VARCHAR NOT NULL,       -- of the export folder that was uploaded
    files        INTEGER,
    rows         BIGINT,
    toolkit_version VARCHAR,
    pushed_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE VIEW pushes AS
SELECT p.ref, p.repo, p.revision, p.commit_id, p.tag, p.private, p.new_commit, p.rows, p.endpoint, p.pushed_at, p.push_id
FROM sbs_pushes p ORDER BY p.push_id;

CREATE VIEW exports AS
SELECT e.ref, e.path, e.file_format, e.label_source, e.rows, e.fingerprint, e.exported_at, e.export_id
FROM sbs_exports e ORDER BY e.export_id;
