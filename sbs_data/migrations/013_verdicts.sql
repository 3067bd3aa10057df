-- 013: human review (`sbs-data browse`, `sbs-data review`). One verdict per (version, example, sample): the
-- latest one wins (an upsert), stamped with when it was made. `review apply` turns a version's verdicts into
-- a selection version whose dropped rows carry the rule `review`. Only sbs_data/review/store.py writes here.

CREATE TABLE sbs_verdicts (
    version_id  INTEGER NOT NULL,    -- the version that was reviewed (any version with teacher rows)
    example_id  VARCHAR NOT NULL,
    sample_idx  INTEGER NOT NULL,
    verdict     VARCHAR NOT NULL,    -- keep | drop
    reason      VARCHAR,             -- the reviewer's optional note (capped at 1000 characters)
    decided_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (version_id, example_id, sample_idx)
);

-- Every verdict with its version's reference: SELECT * FROM verdicts WHERE ref = 'cqa-palm@2'.
CREATE VIEW verdicts AS
SELECT v.dataset || '@' || v.num AS ref, r.example_id, r.sample_idx, r.verdict, r.reason, r.decided_at
FROM sbs_verdicts r JOIN sbs_versions v ON v.version_id = r.version_id;
