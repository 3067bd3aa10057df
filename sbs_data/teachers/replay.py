"""`replay:NAME@N`: serve the completions recorded in a generation version (offline runs, CI, the demo).

Answers by (example_id, sample_idx), e.g. the paper's PaLM-540B completions brought in by `import-original`.
The reference is pinned to a concrete version number so the cache key cannot drift when NAME gains versions.
"""

from __future__ import annotations

from typing import Any

from sbs_data import SbsError
from sbs_data.teachers.base import Permanent, Request, Response, Teacher


class ReplayTeacher(Teacher):
    provider = "replay"
    endpoint = "recorded"
    network = False

    def __init__(self, ref: str, ws: Any):
        v = ws.get(ref, kinds=("generations",))
        super().__init__(v.ref)
        self.version = v
        sql, params = ws.rows_query(
            v, "example_id, sample_idx, raw, finish_reason, prompt_tokens, completion_tokens, teacher"
        )
        rows = ws.all(sql, params)
        self._rows = {(r[0], r[1]): r[2:] for r in rows}
        self.recorded_teacher = rows[0][6] if rows else None
        if not rows:
            raise SbsError(f"replay:{v.ref} has no rows to replay")

    def key_extra(self, req: Request) -> dict[str, Any]:
        return {"example_id": req.example_id}

    def lineage(self) -> dict[str, Any]:
        return {**super().lineage(), "recorded_teacher": self.recorded_teacher}

    async def complete(self, req: Request) -> Response:
        row = self._rows.get((req.example_id, req.sample_idx))
        if row is None:
            raise Permanent(
                f"replay:{self.model} has no completion for example {req.example_id!r} sample {req.sample_idx}"
            )
        raw, finish, pt, ct, _ = row
        return Response(text=raw, finish_reason=finish, prompt_tokens=pt, completion_tokens=ct)


def create(model: str, *, base_urls: tuple[str, ...] = (), ws: Any = None, **opts: Any) -> Teacher:
    """The registry's factory for `replay:NAME@N` (needs the workspace that holds NAME@N)."""
    if base_urls:
        raise SbsError("--base-url does not apply to replay: teachers")
    if ws is None:
        raise SbsError("replay: teachers need a workspace")
    return ReplayTeacher(model, ws)
