-- 008: rationalization (`sbs-data rationalize`). `hinted` marks a row whose teacher was shown the gold answer
-- as a hint (STaR's rationalization); it is false for every ordinary row, so old rows read as unhinted.
-- Scores copy it (like split and teacher) and add the `hint_leak` signal: the rationale says it was told
-- the answer ("the hint", "we are told the answer", "as given.").

ALTER TABLE sbs_generations ADD COLUMN hinted BOOLEAN DEFAULT false;
ALTER TABLE sbs_scores ADD COLUMN hinted BOOLEAN DEFAULT false;
ALTER TABLE sbs_scores ADD COLUMN hint_leak BOOLEAN;
