"""The Hugging Face dataset card (`README.md`) of an export: YAML front matter + human-readable provenance.

The front matter declares `configs` (data_files per split) so that `datasets.load_dataset(DIR)` and the Hub
read exactly the shards, and `dataset_info.features` in the `datasets` YAML layout (using `sequence:` for lists,
which every `datasets` release reads). Everything here is derived from the manifest, so the card is as
deterministic as the shards.
"""

from __future__ import annotations

import html
from typing import Any

import pyarrow as pa
import yaml

#: Licences of the built-in tasks' source data as published by their authors; verify before redistribution.
SOURCE_LICENSES: dict[str, tuple[str, str]] = {
    "esnli": ("mit", "e-SNLI (Camburu et al., 2018), MIT licence; built on SNLI (CC BY-SA 4.0)"),
    "anli": ("cc-by-nc-4.0", "ANLI (Nie et al., 2020), CC BY-NC 4.0 (non-commercial)"),
    "cqa": ("mit", "CommonsenseQA (Talmor et al., 2019), MIT licence as listed on its Hub page"),
    "svamp": ("mit", "SVAMP (Patel et al., 2021), MIT licence"),
}
TASK_CATEGORIES: dict[str, list[str]] = {
    "esnli": ["text-classification", "text-generation"],
    "anli": ["text-classification", "text-generation"],
    "cqa": ["question-answering", "multiple-choice", "text-generation"],
    "svamp": ["question-answering", "text-generation"],
}
CITATION = """@inproceedings{hsieh2023distilling,
  title     = {Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data and Smaller Model Sizes},
  author    = {Hsieh, Cheng-Yu and Li, Chun-Liang and Yeh, Chih-Kuan and Nakhost, Hootan and Fujii, Yasuhisa and
               Ratner, Alexander and Krishna, Ranjay and Lee, Chen-Yu and Pfister, Tomas},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2023},
  pages     = {8003--8017},
  year      = {2023},
  url       = {https://arxiv.org/abs/2305.02301}
}"""


def _dtype(t: pa.DataType) -> Any:
    """An arrow type in the `datasets` YAML feature layout."""
    if pa.types.is_null(t):
        return {"dtype": "null"}
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return {"dtype": "string"}
    if pa.types.is_boolean(t):
        return {"dtype": "bool"}
    if pa.types.is_integer(t):
        return {"dtype": str(t)}
    if pa.types.is_floating(t):
        return {"dtype": {16: "float16", 32: "float32", 64: "float64"}[t.bit_width]}
    if pa.types.is_list(t):
        inner = _dtype(t.value_type)
        return {"sequence": inner["dtype"]} if set(inner) == {"dtype"} else {"sequence": inner}
    if pa.types.is_struct(t):
        return {"struct": [{"name": f.name, **_dtype(f.type)} for f in t]}
    raise ValueError(f"no datasets feature for arrow type {t}")


def features_yaml(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, **_dtype(f.type)} for f in schema]


def _front_matter(
    manifest: dict, schema: pa.Schema, sizes: dict[str, dict[str, int]], license: str | None
) -> dict:
    tasks = [t for t in str(manifest["task"]).split(",") if t]
    lic = license or (
        SOURCE_LICENSES[tasks[0]][0] if len(tasks) == 1 and tasks[0] in SOURCE_LICENSES else "other"
    )
    cats: list[str] = []
    for t in tasks:
        for c in TASK_CATEGORIES.get(t, ["text-generation"]):
            if c not in cats:
                cats.append(c)
    ext = "parquet" if manifest.get("file_format", "parquet") == "parquet" else "jsonl"
    splits = list(manifest["splits"])
    total_rows = sum(s["rows"] for s in manifest["splits"].values())
    size_cat = next(
        (
            c
            for n, c in (
                (1_000, "n<1K"),
                (10_000, "1K<n<10K"),
                (100_000, "10K<n<100K"),
                (1_000_000, "100K<n<1M"),
            )
            if total_rows < n
        ),
        "1M<n<10M",
    )
    fm: dict[str, Any] = {"license": lic}
    if lic == "other":
        # no license_link: the export holds no LICENSE file; the card's Licensing section says what applies
        fm["license_name"] = "mixed-see-card"
    fm.update(
        {
            "language": ["en"],
            "pretty_name": f"{manifest['source']} (Distilling Step-by-Step data)",
            "task_categories": cats,
            "size_categories": [size_cat],
            "tags": ["distilling-step-by-step", "rationales", "chain-of-thought", "sbs-data", *tasks],
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [{"split": s, "path": f"{s}/part-*.{ext}"} for s in splits],
                }
            ],
            "dataset_info": {
                "features": features_yaml(schema),
                "splits": [
                    {
                        "name": s,
                        "num_bytes": sizes[s]["num_bytes"],
                        "num_examples": manifest["splits"][s]["rows"],
                    }
                    for s in splits
                ],
                "download_size": sum(sizes[s]["download_size"] for s in splits),
                "dataset_size": sum(sizes[s]["num_bytes"] for s in splits),
            },
        }
    )
    return fm


def _g4(x: Any) -> str:
    """A float at 4 significant digits, as the report prints it (ints and None as themselves)."""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    def cell(x: Any) -> str:
        return ("" if x is None else str(x)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


#: Characters of each text shown in the card's example rows.
EXAMPLE_CHARS = 300
_MD_SPECIAL = {ord(c): "\\" + c for c in "\\`*_[]()#!~"}  # `|`: the table escapes it


def md_text(x: Any, cap: int = EXAMPLE_CHARS) -> str:
    """Untrusted text as one Markdown table cell: cut to `cap` characters, HTML-escaped, Markdown's
    punctuation backslash-escaped (no links, images or emphasis from the data), newlines as spaces."""
    if x is None:
        return "∅"
    s = str(x)
    cut = len(s) > cap
    s = " ".join(s[:cap].split())
    s = html.escape(s, quote=False).translate(_MD_SPECIAL)
    return s + (" …" if cut else "")


def _examples(rows: list[dict[str, Any]], label_source: str) -> list[str]:
    if not rows:
        return []
    out = [
        "## Examples",
        "",
        f"The first {len(rows)} exported rows (texts cut to {EXAMPLE_CHARS} characters; the shards hold them whole):",
        "",
    ]
    out.append(
        _table(
            [
                [
                    md_text(r["example_id"], 60),
                    r["split"],
                    md_text(r["input"]),
                    md_text(r["rationale"]),
                    md_text(r["label"], 80),
                ]
                for r in rows
            ],  # fmt: skip
            ["example_id", "split", "input", "rationale", f"label ({label_source})"],
        )
    )
    return [*out, ""]


def _rationalization(manifest: dict[str, Any]) -> list[str]:
    """What rationalization recovered (from the lineage) and how many exported rows are hinted."""
    hinted = {s: i.get("hinted", 0) for s, i in manifest["splits"].items()}
    combines = [e for e in manifest["lineage"] if (e.get("config") or {}).get("op") == "rationalize-combine"]
    if not combines and not any(hinted.values()):
        return []
    out = ["## Rationalization", ""]
    for e in combines:
        c = e["config"]
        asked, rec = c.get("asked") or {}, c.get("recovered") or {}
        rows = [[sp, asked.get(sp, 0), rec.get(sp, 0)] for sp in sorted(set(asked) | set(rec))]
        out += [
            f"`{e['ref']}` asked the teacher again, with the gold answer as a hint (STaR's rationalization), for "
            f"the rows of `{c.get('source')}` whose label was wrong or did not parse; {sum(rec.values())} of "
            f"{sum(asked.values())} were recovered (the hinted answer agrees with gold and its rationale does not "
            f"mention the hint) and replace the original rows. {c.get('leaked', 0)} hinted answers were refused "
            f"for mentioning the hint, {c.get('disagree', 0)} still disagreed with gold or did not parse.",
            "",
            _table(rows, ["split", "asked again", "recovered"]),
            "",
        ]
    out += [
        "Exported rows with `hinted = true`: "
        + ", ".join(f"{sp} {n}" for sp, n in hinted.items())
        + ". Their rationales argue for an answer the teacher was given; a trainer can weight or drop them.",
        "",
    ]
    return out


def build_card(
    manifest: dict[str, Any],
    schema: pa.Schema,
    sizes: dict[str, dict[str, int]],
    *,
    quality_stats: dict[str, dict[str, Any]] | None = None,
    label_stats: dict[str, Any] | None = None,
    license: str | None = None,
    examples: list[dict[str, Any]] | None = None,
) -> str:
    """Render the dataset card for an export described by `manifest`."""
    fm = _front_matter(manifest, schema, sizes, license)
    src, task = manifest["source"], manifest["task"]
    teachers = sorted({t for e in manifest["lineage"] for t in e.get("teachers", [])})
    totals = manifest["totals"]
    ext = manifest.get("file_format", "parquet")
    out: list[str] = [
        "---",
        yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, width=1000).rstrip(),
        "---",
        "",
    ]
    out += [
        f"# {src}: Distilling Step-by-Step training data",
        "",
        f"Task **{task}**, exported from the sbs-data workspace version `{src}` ({manifest.get('source_kind', '')}). "
        f"Each row is one (example, teacher sample) pair: the task input, a label and the teacher's rationale, "
        f"ready for the multi-task training of *Distilling Step-by-Step* (Hsieh et al., 2023). "
        f"Training labels come from the **{manifest['label_source']}** labels"
        + (
            " (the distillation setting: no human labels needed)."
            if manifest["label_source"] == "teacher"
            else "."
        )
        + (
            f" Teacher(s): {', '.join(f'`{t}`' for t in teachers)}."
            if teachers
            else " No teacher outputs (examples only)."
        ),
        "",
        _table(
            [[s, i["rows"], i.get("examples"), len(i["shards"])] for s, i in manifest["splits"].items()],
            ["split", "rows", "examples", "shards"],
        ),
        "",
        "## Usage",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{"parquet" if ext == "parquet" else "json"}", data_dir="PATH/TO/EXPORT")  # or load_dataset("PATH/TO/EXPORT") / the Hub repo id',
        "",
        "def multitask(row):",
        '    """One input, two targets: the label task and the rationale task (Hsieh et al., 2023)."""',
        '    return [("predict: " + row["input"], row["label"]), ("explain: " + row["input"], row["rationale"])]',
        "```",
        "",
        "The student (e.g. T5) is trained on both views of every row: `predict: <input>` -> `label` and "
        "`explain: <input>` -> `rationale`, with the total loss `L = L_label + λ·L_rationale`. At test time only "
        "the `predict: ` prefix is used, so rationales cost nothing at inference. Rows whose `rationale` is null "
        "contribute only to the label task.",
        "",
        "## Columns",
        "",
        _table(
            [
                [
                    "example_id",
                    "stable id of the task example (all samples of an example share it and its split)",
                ],
                ["task", "task name; selects the label comparison (e.g. numeric for svamp)"],
                ["split", "train / validation / test"],
                ["input", "the rendered task input, without any `predict:`/`explain:` prefix"],
                ["label", f"training target ({manifest['label_source']} label)"],
                ["gold_label", "the dataset's label (null when unlabelled)"],
                ["teacher_label", "the label the teacher predicted (null for examples-only exports)"],
                [
                    "rationale",
                    "the teacher's reasoning summary"
                    if manifest.get("options", {}).get("rationale_source") == "reasoning_summary"
                    else "the teacher's step-by-step rationale",
                ],
                ["teacher", "teacher model spec"],
                ["sample_idx", "index of the teacher sample for this example"],
                ["choices", "answer choices (multiple-choice tasks) or null"],
                ["quality", "quality signals from `sbs-data score`, by name (null when not scored)"],
                [
                    "hinted",
                    "true when the teacher was shown the gold answer as a hint (`sbs-data rationalize`); "
                    "weight or drop these rows in training (`sbs-train --hinted drop`)",
                ],
                *(
                    [["teacher_reasoning", "the teacher's summary of its own reasoning (null when none)"]]
                    if "teacher_reasoning" in schema.names
                    else []
                ),
            ],
            ["column", "meaning"],
        ),
        "",
        *_examples(examples or [], manifest["label_source"]),
        "## Provenance",
        "",
        "The full lineage is in `manifest.json` (`lineage`), newest first:",
        "",
    ]
    lin_rows = []
    for e in manifest["lineage"]:
        hashes = ", ".join(f"{k}={v}" for k, v in e.items() if k.endswith("_hash") and k != "config_hash")
        lin_rows.append(
            [
                f"`{e['ref']}`",
                e["kind"],
                ", ".join(e.get("parents", [])),
                e["config_hash"],
                ", ".join(e.get("teachers", [])),
                hashes,
                e["created_at"],
            ]
        )
    out += [
        _table(
            lin_rows,
            ["version", "kind", "parents", "config hash", "teachers", "prompt / recipe hashes", "created"],
        ),
        "",
    ]
    gen = totals.get("generated")
    if gen:
        out += [
            f"Teacher cost: {gen['generations']} generations, {gen['prompt_tokens']:,} prompt + "
            f"{gen['completion_tokens']:,} completion tokens, ${gen['cost_usd']:.4f} in all; the exported rows account "
            f"for ${totals['exported']['cost_usd']:.4f}.",
            "",
        ]
    out += _rationalization(manifest)
    funnel = manifest.get("funnel", {})
    out += ["## Filtering funnel", ""]
    frows: list[list[Any]] = []
    remaining = None
    sel = funnel.get("selection", [])
    if sel:
        remaining = funnel["loaded"] + sum(s["dropped"] for s in sel)
        frows.append(["generated rows", "", remaining])
        # A selection made by `review apply` drops a person's rejected rows with the rule `review`.
        reviewed = (manifest["lineage"][0].get("config") or {}).get("op") == "review"
        for s in sel:
            remaining -= s["dropped"]
            stage = (
                "dropped in review (`sbs-data browse`, `review apply`)"
                if reviewed and s["step"] == "review"
                else f"recipe step `{s['step']}`"
            )
            frows.append([stage, f"-{s['dropped']}", remaining])
    else:
        frows.append(["rows in the version", "", funnel.get("loaded")])
    remaining = funnel.get("loaded")
    if funnel.get("outside_splits"):
        remaining -= funnel["outside_splits"]
        frows.append(["splits not exported", f"-{funnel['outside_splits']}", remaining])
    if funnel.get("contaminated_dropped"):
        remaining -= funnel["contaminated_dropped"]
        frows.append(["contaminated (--drop-contaminated)", f"-{funnel['contaminated_dropped']}", remaining])
    frows.append(["**exported**", "", funnel.get("exported")])
    out += [_table(frows, ["stage", "change", "rows"]), ""]
    cont = manifest.get("contamination") or {}
    if cont.get("checked"):
        out += [
            f"Contamination check ({cont['method']}, against {'/'.join(cont['against'])} inputs): "
            f"{cont['flagged_rows']} train row(s) flagged, {cont['dropped_rows']} dropped.",
            "",
        ]
    out += ["## Quality statistics", ""]
    ls = label_stats or {}
    if ls:
        bits = []
        if ls.get("rationale_rate") is not None:
            bits.append(f"{ls['rationale_rate']:.1%} of rows carry a rationale")
        if "teacher_agreement" in ls:
            bits.append(
                f"teacher labels agree with gold on {ls['teacher_agreement']:.1%} of {ls['teacher_labelled']} labelled rows"
            )
        if bits:
            out += ["; ".join(bits).capitalize() + ".", ""]
    empty = [n for n, st in (quality_stats or {}).items() if not st.get("present")]
    quality_stats = {n: st for n, st in (quality_stats or {}).items() if st.get("present")}
    if quality_stats:
        qrows = []
        for name, st in quality_stats.items():
            if "mean" in st:
                desc = f"mean {_g4(st['mean'])}, min {_g4(st['min'])}, max {_g4(st['max'])}"
            elif "true_rate" in st:
                desc = f"true for {st['true_rate']:.1%}"
            elif "top" in st:
                desc = ", ".join(f"{k}: {v}" for k, v in st["top"].items())
            else:
                desc = ""
            qrows.append([f"`{name}`", st["present"], desc])
        out += [_table(qrows, ["signal", "rows scored", "summary"]), ""]
        if empty:
            out += [f"No value on any exported row: {', '.join(f'`{n}`' for n in empty)}.", ""]
    else:
        out += ["No quality signals (the version was not scored).", ""]
    out += ["## Licensing", ""]
    for t in [t for t in str(task).split(",") if t]:
        if t in SOURCE_LICENSES:
            out.append(
                f"- Source data: {SOURCE_LICENSES[t][1]}. Its terms apply to `input`, `choices` and `gold_label`."
            )
        else:
            out.append(
                f"- Source data of task `{t}`: check the licence of the original dataset before redistributing."
            )
    out += [
        "- Teacher outputs (`rationale`, `teacher_label`) were produced by "
        + (", ".join(f"`{t}`" for t in teachers) if teachers else "no teacher")
        + "; their use, in particular to train competing models, is governed by each provider's terms of service.",
        f"- The `license: {fm['license']}` field above covers this compilation; it cannot grant more than the sources allow.",
        "",
        "## Citation",
        "",
        "This data follows *Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data and "
        "Smaller Model Sizes* (Hsieh et al., Findings of ACL 2023, [arXiv:2305.02301](https://arxiv.org/abs/2305.02301)):",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
        f"Made with sbs-data {manifest['toolkit_version']}.",
        "",
    ]
    return "\n".join(out)
