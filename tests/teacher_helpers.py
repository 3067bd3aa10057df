"""A third-party teacher provider, `echo:` (a teacher, its batch API and its factory), registered by the
registry tests directly and through an entry-point plugin."""

from __future__ import annotations

from sbs_data import SbsError
from sbs_data.teachers.base import Request, Response, Teacher
from sbs_data.teachers.batch_api import BatchAPI


class EchoTeacher(Teacher):
    provider = "echo"
    endpoint = "echo"
    network = False

    def __init__(self, model: str, shout: bool = False):
        super().__init__(model)
        self.shout = shout

    async def complete(self, req: Request) -> Response:
        text = req.messages[-1]["content"]
        return Response(text.upper() if self.shout else text, "stop")


class EchoBatch(BatchAPI):
    provider = "echo"
    max_requests, max_bytes = 10, 1000


def make_echo(model, *, base_urls=(), ws=None, timeout=60.0, prompt_cache=True, **opts):
    if base_urls:
        raise SbsError("--base-url does not apply to echo: teachers")
    return EchoTeacher(model, **opts)
