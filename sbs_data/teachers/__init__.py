"""Teacher adapters: one module per provider, each with one async method `complete(Request) -> Response`,
its batch API where the provider has one, and one reader of its response body. `registry` maps spec
prefixes to them; `models` holds each model's prices and facts."""

from sbs_data.teachers.base import (
    AuthError,
    ContextLength,
    Permanent,
    RateLimited,
    RateLimits,
    Request,
    Response,
    Teacher,
    TeacherError,
    Transient,
)
from sbs_data.teachers.models import ModelFacts, facts_for

# `batch_api` here is the registry's function; it shadows the submodule teachers/batch_api.py as an attribute of
# this package, so import that module's names with `from sbs_data.teachers.batch_api import ...`.
from sbs_data.teachers.registry import batch_api, parse_spec, register, supports_batch

__all__ = [
    "AuthError",
    "ContextLength",
    "ModelFacts",
    "Permanent",
    "RateLimited",
    "RateLimits",
    "Request",
    "Response",
    "Teacher",
    "TeacherError",
    "Transient",
    "batch_api",
    "facts_for",
    "parse_spec",
    "register",
    "supports_batch",
]
