-- 012: a push writes its intent (version, repo, branch, tag, the export's fingerprint, the branch head it builds
-- on) and commits it BEFORE the Hub commit, and removes it in the transaction that records the push. An intent
-- left behind (the push was interrupted or killed between the Hub commit and its record) is reconciled by the
-- next push to that repo: the commit it made, found on the branch by its message and the fingerprint in its
-- description, is recorded then (new_commit = true), and the tag it missed is created; an intent whose commit
-- never happened is dropped. Never holds credentials.

CREATE TABLE sbs_push_intents (
    intent_id     VARCHAR PRIMARY KEY,
    version_id    INTEGER NOT NULL,
    ref           VARCHAR NOT NULL,
    endpoint      VARCHAR NOT NULL,      -- Hub URL (no credentials)
    repo          VARCHAR NOT NULL,
    revision      VARCHAR NOT NULL,
    tag           VARCHAR,
    private       BOOLEAN,
    parent_commit VARCHAR,               -- the branch head the commit builds on
    fingerprint   VARCHAR NOT NULL,
    files         INTEGER,
    rows          BIGINT,
    toolkit_version VARCHAR,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);
