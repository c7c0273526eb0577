"""Turning a request's JSON body or query string into a validated schema, or a 4xx."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from sanic import Request

from simbridge.errors import BadRequest, ValidationFailed
from simbridge.protocol import nests_deeper
from simbridge.web.context import app_context

Schema = TypeVar("Schema", bound=BaseModel)


def parse_body(request: Request, schema: type[Schema]) -> Schema:
    """The body as `schema`: 400 unless it is a JSON object, 422 naming each bad field."""
    try:
        data = orjson.loads(request.body) if request.body else None
    except orjson.JSONDecodeError as exc:
        raise BadRequest("Request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest()
    max_depth = app_context(request).settings.max_json_depth
    if nests_deeper(request.body, data, max_depth):
        raise BadRequest(f"Request body nests deeper than {max_depth} levels")
    return _validate(schema, data, strict=True)


def parse_query(request: Request, schema: type[Schema]) -> Schema:
    """The query string as `schema` (the last value wins for a repeated name).

    A name given with no value (`limit=`) is an empty value, refused like any other bad one,
    not a name left out (which would fall back to its default).
    """
    args = request.get_args(keep_blank_values=True)
    data = {name: values[-1] for name, values in args.items()}
    return _validate(schema, data, strict=False)


def _validate(schema: type[Schema], data: dict[str, Any], strict: bool) -> Schema:
    """Strict for JSON bodies (`"1"` and `true` are not integers); a query string is all
    text, so there numbers are parsed from it."""
    try:
        return schema.model_validate(data, strict=strict)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or "body",
                "message": error["msg"],
            }
            for error in exc.errors(include_url=False, include_input=False)
        ]
        fields = ", ".join(error["field"] for error in errors)
        raise ValidationFailed(f"Invalid value for: {fields}", errors=errors) from exc


MAX_SINCE_DIGITS = 4000  # beyond every seq, and within what Python turns into an int at once


def socket_since(request: Request) -> int | None:
    """A socket handshake's `?since=K` (contract §6): None when not given (a v1 socket); 400
    unless K is a non-negative integer, written in plain digits. Any K beyond the device's
    latest seq is valid: it asks for nothing to be replayed."""
    values = request.get_args(keep_blank_values=True).getlist("since")
    if not values:
        return None
    raw = values[-1]  # the last value wins, as in `parse_query`
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_SINCE_DIGITS):
        raise BadRequest("since must be a non-negative integer")
    return int(raw)
