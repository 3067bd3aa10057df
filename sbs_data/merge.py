"""Merge generation versions (e.g. two teachers, or two runs) into one version for scoring and export."""

from __future__ import annotations

from sbs_data import SbsError
from sbs_data.workspace import Version, Workspace, check_name


def merge(ws: Workspace, refs: list[str], name: str, note: str | None = None) -> Version:
    """Union the visible rows of several generation versions answering the same examples version.

    Sample indices are renumbered per example (source order, then original sample index), so every
    (example, sample) key stays unique; `teacher` still says where each row came from.
    """
    if len(refs) < 2:
        raise SbsError("merge needs at least two versions")
    sources = [ws.get(r, kinds=("generations",)) for r in refs]
    examples = {s.examples_id for s in sources}
    if len(examples) != 1:
        names = ", ".join(f"{s.ref} -> {ws.by_id(s.examples_id).ref}" for s in sources)
        raise SbsError(f"cannot merge generations of different examples versions ({names})")
    check_name(name)
    parts, params = [], []
    for i, s in enumerate(sources):
        sql, p = ws.rows_query(s)
        parts.append(f"SELECT {i} AS _src, * FROM ({sql})")
        params += p
    union = " UNION ALL ".join(parts)
    config = {
        "op": "merge",
        "sources": [s.ref for s in sources],
        "source_hashes": [s.config_hash for s in sources],
    }
    with ws.new_version(name, "merge", config, parents=sources, task=sources[0].task, note=note) as v:
        ws.execute(
            f"""INSERT INTO sbs_generations BY NAME
                SELECT ? AS version_id,
                       (row_number() OVER (PARTITION BY example_id ORDER BY _src, sample_idx) - 1)::INTEGER AS sample_idx,
                       * EXCLUDE (_src, version_id, sample_idx)
                FROM ({union})""",
            [v.version_id, *params],
        )
    return ws.by_id(v.version_id)
