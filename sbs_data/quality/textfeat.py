"""Text signals of a chunk of rationales, tokenised once, in polars (Rust regex) and numpy.

DuckDB's list functions (`regexp_extract_all` then `list_distinct` / `list_intersect` / lambdas) cost
~100 us a row; here each rationale is tokenised once, every token is hashed once (`Series.hash`), and
the set work (distinct 3-grams, distinct content words, overlap with the input) runs over flat uint64
arrays: hash-set `unique` / `is_in` and `bincount`, never per-row Python. The definitions are the ones
in `signals.SIGNALS`:

- a word is a run of letters/digits (`[\\p{L}\\p{N}]+`) of the lowercased rationale;
- sentences split the lowercased rationale at ". " after mapping "!?" to "." and tab/newline to space;
- 3-gram shingles of the word sequence (a 1-2 word rationale is one shingle: its normalised text);
- input overlap: share of the rationale's distinct non-stopwords that are words of the input;
- numbers: `-?\\d+(\\.\\d+)?` not preceded by a digit, commas removed (first and last are kept).
"""

from __future__ import annotations

import numpy as np
import polars as pl

WORD = r"[\p{L}\p{N}]+"
# `(^|[^\d])(-?\d+(?:\.\d+)?)` with the group as the whole match minus its first character: the text gets
# a leading space so the `^` alternative is never needed (same matches, RE2 and Rust regex alike).
_NUMBER = r"[^0-9]-?[0-9]+(?:\.[0-9]+)?"
# Arithmetic steps as in signals._STEP1 / mathexpr.arithmetic_steps, spelled for Rust regex with RE2's
# ASCII classes (\s = [\t\n\f\r ], \d = [0-9], \w = [0-9A-Za-z_]), so both engines match alike.
_S = r"[\t\n\f\r ]"
_N = r"-?[0-9]+(?:\.[0-9]+)?"
_OPS = r"[-+*/x\u00d7\u00f7]"
EXPR = rf"(?:\(?{_S}*{_N}{_S}*\)?{_S}*{_OPS}{_S}*)+\(?{_S}*{_N}{_S}*\)?"
STEP = rf"[^0-9A-Za-z_.]({EXPR}){_S}*(?:=|is|equals){_S}*({_N})"
_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xBF58476D1CE4E5B9)
_C3 = np.uint64(0x94D049BB133111EB)


def _flat_hashes(toks: pl.Series) -> np.ndarray:
    """Hashes of every token of a list column, flat, in row order."""
    flat = toks.explode()
    flat = flat.filter(flat.is_not_null())  # empty lists explode to a null (or to nothing)
    return flat.hash().to_numpy()


def _offsets(lens: np.ndarray) -> np.ndarray:
    off = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    return off


def shingles(th: np.ndarray, lens: np.ndarray, whole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Word 3-gram hashes per row as (flat uint64 values, offsets), from flat token hashes `th`.

    A row with 1-2 words has one shingle, `whole` (the hash of its normalised text); with none, none.
    """
    n = len(lens)
    cnt = np.where(lens >= 3, lens - 2, np.minimum(lens, 1))
    soff = _offsets(cnt)
    if len(th) >= 3:
        x = th[:-2] * _C1 + th[1:-1]
        x ^= x >> np.uint64(29)
        x = x * _C2 + th[2:]
        x ^= x >> np.uint64(32)
        # a 3-gram is valid when its three tokens are in one row: the row of token j equals that of j + 2
        row = np.repeat(np.arange(n, dtype=np.int64), lens)
        grams = x[row[:-2] == row[2:]]
    else:
        grams = np.empty(0, dtype=np.uint64)
    short = np.nonzero((lens > 0) & (lens < 3))[0]
    if len(short):
        # insert each short row's single shingle before the 3-grams of the rows after it
        grams = np.insert(grams, soff[short] - np.arange(len(short)), whole[short])
    return grams, soff


def text_features(
    rows: pl.DataFrame, inputs: pl.DataFrame, stopwords: list[str], numbers: bool
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Text signals of `rows` (rid, example_id, rationale) given `inputs` (example_id, input_text).

    Returns (features: rid, words, sentences, repeated_sentences, ngram_repetition, input_overlap,
    rationale_hash, first_num, last_num; shingle values; shingle offsets), rows in the given order.
    The string work is one lazy polars query, so it runs on all cores.
    """
    n = rows.height
    if n >= 1 << 23:
        raise ValueError("text_features works on chunks of fewer than 8M rows")
    lr = pl.col("rationale").fill_null("").str.to_lowercase()
    sents = (
        lr.str.replace_many(["!", "?", "\n", "\t"], [".", ".", " ", " "])
        .str.strip_chars_end(". ")
        .str.split(". ")
    )
    blank = lr.str.strip_chars(" ") == ""
    nums = (" " + pl.col("rationale").fill_null("").str.replace_all(",", "", literal=True)).str.extract_all(
        _NUMBER
    )
    text = (
        rows.lazy()
        .select(
            "rid",
            "example_id",
            toks=lr.str.extract_all(WORD),
            sentences=pl.when(blank).then(0).otherwise(sents.list.len()).cast(pl.Int32),
            sents_distinct=pl.when(blank).then(0).otherwise(sents.list.n_unique()).cast(pl.Int32),
            first_num=nums.list.first().str.slice(1).cast(pl.Float64, strict=False) if numbers else None,
            last_num=nums.list.last().str.slice(1).cast(pl.Float64, strict=False) if numbers else None,
        )
        .with_columns(
            whole=pl.col("toks").list.join(" ").hash(), words=pl.col("toks").list.len().cast(pl.Int32)
        )
        .collect()
    )
    itoks = (
        inputs.lazy()
        .select(toks=pl.col("input_text").fill_null("").str.to_lowercase().str.extract_all(WORD))
        .collect()
        .get_column("toks")
    )
    toks = text.get_column("toks")
    lens = text.get_column("words").to_numpy().astype(np.int64)
    th = _flat_hashes(toks)
    whole = text.get_column("whole").to_numpy()
    grams, soff = shingles(th, lens, whole)
    cnt = np.diff(soff)
    if len(grams):
        import pyarrow as pa

        distinct = (
            pl.Series(pa.LargeListArray.from_arrays(pa.array(soff), pa.array(grams)))
            .list.n_unique()
            .to_numpy()
        )
    else:
        distinct = np.zeros(n, dtype=np.int64)
    ngram_rep = np.where(cnt > 0, 1.0 - distinct / np.maximum(cnt, 1), 0.0)

    # input overlap: keys (example, word) of the inputs; the rationale's distinct non-stopwords in them
    ex_of_row = (
        rows.select("example_id")
        .join(
            inputs.select("example_id").with_row_index("ex"),
            on="example_id",
            how="left",
            maintain_order="left",
        )
        .get_column("ex")
        .fill_null(len(inputs))
        .to_numpy()
        .astype(np.uint64)
    )
    ilens = itoks.list.len().to_numpy().astype(np.int64)
    ikeys = _flat_hashes(itoks) ^ (np.repeat(np.arange(len(inputs), dtype=np.uint64), ilens) * _C3)
    tok_row = np.repeat(np.arange(n, dtype=np.uint64), lens)
    in_input = pl.Series(th ^ (ex_of_row[tok_row] * _C3)).is_in(pl.Series(ikeys).implode()).to_numpy()
    content = ~pl.Series(th).is_in(pl.Series(stopwords, dtype=pl.String).hash().implode()).to_numpy()
    # (row, word, in input) in one uint64: distinct per row without a two-column unique
    key = (tok_row << np.uint64(40)) | ((th >> np.uint64(25)) << np.uint64(1))
    key |= in_input
    key = pl.Series(key[content]).unique().to_numpy()
    krow = (key >> np.uint64(40)).astype(np.int64)
    n_content = np.bincount(krow, minlength=n)
    n_in = np.bincount(krow, weights=(key & np.uint64(1)).astype(np.float64), minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = np.where(n_content > 0, n_in / np.maximum(n_content, 1), np.nan)

    feats = text.select(
        "rid",
        "words",
        "sentences",
        repeated_sentences=pl.col("sentences") - pl.col("sents_distinct"),
        ngram_repetition=pl.Series(ngram_rep, dtype=pl.Float64),
        input_overlap=pl.Series(overlap, dtype=pl.Float64).fill_nan(None),
        rationale_hash=pl.when(pl.col("words") > 0).then(pl.col("whole")),
        first_num=pl.col("first_num").cast(pl.Float64),
        last_num=pl.col("last_num").cast(pl.Float64),
    )
    return feats, grams, soff


def arithmetic_candidates(rows: pl.DataFrame) -> pl.DataFrame:
    """Every `a op b = c` step (kind 'step': expr, claimed) and each rationale's last expression
    (kind 'last': expr) of `rows` (rid, rationale), commas removed.

    Steps are found in one scan of the text with a leading space (standing in for the look-behind
    `(?<![\\w.])` that RE2 and Rust regex lack); each match is re-matched for its groups, which gives the
    groups of the original scan since a match never depends on text after it.
    """
    rc = pl.col("rationale").fill_null("").str.replace_all(",", "", literal=True)
    found = (
        rows.lazy()
        .select("rid", steps=(" " + rc).str.extract_all(STEP), last=rc.str.extract_all(EXPR).list.last())
        .collect()
    )
    steps = (
        found.lazy()
        .select("rid", "steps")
        .explode("steps")
        .drop_nulls("steps")
        .select("rid", g=pl.col("steps").str.extract_groups("^" + STEP))
        .select(
            "rid",
            kind=pl.lit("step"),
            expr=pl.col("g").struct[0].str.strip_chars(" "),
            claimed=pl.col("g").struct[1].cast(pl.Float64),
        )
    )
    last = (
        found.lazy()
        .drop_nulls("last")
        .select(
            "rid",
            kind=pl.lit("last"),
            expr=pl.col("last").str.strip_chars(" "),
            claimed=pl.lit(None, pl.Float64),
        )
    )
    return pl.concat([steps, last]).collect()
