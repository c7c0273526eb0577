"""One decorator that writes a handler's OpenAPI entry: its operation id, body, query, replies
and errors; and the tags the operations are grouped under.

Operation ids read like functions (`login`, `send_sms`) because generated clients name their
functions after them (`openapi-python-client` makes `api.auth.login`); sanic-ext's own ids
(`post~auth.login`) would come out as `postauth_login`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, get_origin

from pydantic import BaseModel
from sanic_ext.extensions.openapi import openapi
from sanic_ext.extensions.openapi.definitions import Component, Parameter, RequestBody, Response

from simbridge.schemas import ErrorOut

Handler = TypeVar("Handler", bound=Callable[..., Any])

Tag = Literal["auth", "devices", "pairing", "commands", "history", "webhooks", "operations"]
# One tag per blueprint (health and metrics share "operations"), in the order the docs list them.
TAGS: dict[Tag, str] = {
    "auth": "Accounts: register, log in for a bearer token, change the password, log out "
    "everywhere.",
    "devices": "Your hosts (phones holding SIM cards) and clients, and their device tokens.",
    "pairing": "Pair a host with a client of the same account through a single-use code.",
    "commands": "Commands to a host over REST (SMS, calls, SIM cards) and their state; the "
    "same path as a client's WebSocket command.",
    "history": "Messages a device sent or received.",
    "webhooks": "Event frames POSTed to a URL of yours, signed.",
    "operations": "For load balancers and monitoring: health and Prometheus metrics.",
}

ERROR_MEANINGS = {
    400: "Body is not a JSON object, or the pairing code is invalid, used or expired",
    401: "Missing, invalid or expired token; or wrong username or password",
    403: "The device is of the wrong type for this action",
    404: "No such device, or not one of the caller's",
    409: "Username already taken, or a per-account limit reached",
    413: "Body larger than the configured limit",
    422: "A field is missing, of the wrong type or out of range (see `errors`)",
    429: "Too many attempts: wait the `Retry-After` seconds",
    503: "The target host has no live WebSocket (or the relay cannot reach it now)",
}


def documented(
    operation_id: str,
    *,
    tag: Tag,
    ok: type[BaseModel],
    errors: Sequence[int],
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    secured: bool = True,
) -> Callable[[Handler], Handler]:
    """The handler's entry; its docstring's first line is the summary, the rest the
    description (sanic-ext reads them)."""
    responses = [Response({"application/json": Component(ok)}, status=200, description="Success")]
    for status in sorted({*errors, 413, 422} if body else set(errors)):
        responses.append(
            Response(
                {"application/json": Component(ErrorOut)},
                status=status,
                description=ERROR_MEANINGS[status],
            )
        )
    return openapi.definition(
        operation=operation_id,
        tag=tag,
        body=RequestBody({"application/json": Component(body)}, required=True) if body else None,
        parameter=_query_parameters(query) if query else None,
        response=responses,
        secured={"token": []} if secured else None,
    )


def _query_parameters(query: type[BaseModel]) -> list[dict[str, Any] | Parameter | str]:
    """As sanic-ext types its `parameter` argument (a list of any of the three)."""
    return [
        Parameter(name, _openapi_type(field.annotation), "query", required=field.is_required())
        for name, field in query.model_fields.items()
    ]


def _openapi_type(annotation: Any) -> type:
    if get_origin(annotation) is Literal:
        return str
    return annotation if annotation in (int, str) else int
