-- 006: the LLM-judge signal (`sbs-data score --judge SPEC`): a teacher's 1-5 grade of each rationale,
-- NULL when the scores version was made without a judge (or the judge's reply had no "Score: N").
ALTER TABLE sbs_scores ADD COLUMN judge_score INTEGER;
