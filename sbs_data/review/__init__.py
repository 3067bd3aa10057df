"""`sbs-data browse` and `sbs-data review`: look at rationales in a browser, judge rows, apply the verdicts."""
