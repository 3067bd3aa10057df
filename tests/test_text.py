"""storable(): every text that reaches storage can be stored, and repairs are reported."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from sbs_data.text import storable, storable_value


def test_clean_text_is_untouched():
    for s in ("", "plain", "naïve – ünïcode 😀", "tab\tnewline\n"):
        assert storable(s) == (s, False)


def test_lone_surrogates_become_replacement_and_pairs_join():
    assert storable("a\ud800b") == ("a\ufffdb", True)
    assert storable("\udfff") == ("\ufffd", True)
    assert storable("x\ud83d\ude00y") == ("x😀y", True)  # a split pair is one emoji again
    assert storable("é\udc80") == ("é\ufffd", True)


def test_nuls_are_removed_consistently():
    assert storable("a\x00b") == ("ab", True)
    assert storable("é\x00\ud800") == ("é\ufffd", True)


def test_repaired_text_stores_in_duckdb_and_arrow():
    fixed, _ = storable("bad \ud800 text \x00 end")
    con = duckdb.connect()
    con.register("t", pa.table({"s": [fixed]}))
    assert con.execute("SELECT s FROM t").fetchall() == [("bad \ufffd text  end",)]


def test_nested_values_and_keys():
    val, changed = storable_value({"k\ud800": ["ok", "x\x00"], "n": 3, "t": ("a",)})
    assert changed and val == {"k\ufffd": ["ok", "x"], "n": 3, "t": ("a",)}
    assert storable_value({"a": ["b"], "c": None}) == ({"a": ["b"], "c": None}, False)


def test_linear_time_on_long_input():
    import time

    s = ("\ud800é" * 500_000) + "\x00"
    t = time.perf_counter()
    fixed, changed = storable(s)
    assert changed and len(fixed) == 1_000_000 and time.perf_counter() - t < 2
