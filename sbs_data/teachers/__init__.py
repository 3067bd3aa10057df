"""Teacher adapters: one class per provider with one async method, `complete(Request) -> Response`."""

from sbs_data.teachers.base import (
    AuthError,
    ContextLength,
    Permanent,
    RateLimited,
    Request,
    Response,
    Teacher,
    TeacherError,
    Transient,
    parse_spec,
)

__all__ = [
    "AuthError",
    "ContextLength",
    "Permanent",
    "RateLimited",
    "Request",
    "Response",
    "Teacher",
    "TeacherError",
    "Transient",
    "parse_spec",
]
