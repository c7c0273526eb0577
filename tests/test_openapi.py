"""The OpenAPI description served at /docs: every endpoint, its schemas, bearer auth, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

# path, method, whether it takes a JSON body, the error statuses it documents
ENDPOINTS = [
    ("/auth/register", "post", True, {400, 409, 413, 422, 429}),
    ("/auth/login", "post", True, {400, 401, 413, 422, 429}),
    ("/auth/password", "post", True, {400, 401, 413, 422, 429}),
    ("/auth/logout-all", "post", False, {401}),
    ("/devices", "post", True, {400, 401, 409, 413, 422}),
    ("/devices", "get", False, {401}),
    ("/devices/{device_id}/token", "post", False, {401, 404}),
    ("/devices/{device_id}", "delete", False, {401, 404}),
    ("/pair", "post", False, {401, 403, 404, 422, 429}),
    ("/pair/confirm", "post", True, {400, 401, 403, 404, 413, 422, 429}),
    ("/pairings", "get", False, {401}),
    ("/pairings/{pairing_id}", "delete", False, {401, 404}),
    ("/sms", "post", True, {400, 401, 403, 404, 413, 422, 503}),
    ("/call", "post", True, {400, 401, 403, 404, 413, 422, 503}),
    ("/sims", "get", False, {401, 403, 404, 422, 503}),
    ("/commands/{req_id}", "get", False, {401, 404}),
    ("/history", "get", False, {401, 404, 422}),
    ("/webhooks", "post", True, {400, 401, 409, 413, 422}),
    ("/webhooks", "get", False, {401}),
    ("/webhooks/{webhook_id}", "delete", False, {401, 404}),
]
PUBLIC = {"/auth/register", "/auth/login"}


@pytest.fixture
async def spec(http: httpx.AsyncClient) -> dict[str, Any]:
    reply = await http.get("/docs/openapi.json")
    assert reply.status_code == 200
    document: dict[str, Any] = reply.json()
    return document


async def test_docs_serves_swagger_ui(http: httpx.AsyncClient) -> None:
    reply = await http.get("/docs", follow_redirects=True)
    assert reply.status_code == 200
    assert "swagger" in reply.text.lower()


async def test_openapi_lists_exactly_the_rest_endpoints(spec: dict[str, Any]) -> None:
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    operations = {("/health", "get"), ("/metrics", "get")}
    assert documented == {(path, method) for path, method, _, _ in ENDPOINTS} | operations


@pytest.mark.parametrize(("path", "method", "has_body", "errors"), ENDPOINTS)
async def test_openapi_describes_endpoint(
    spec: dict[str, Any], path: str, method: str, has_body: bool, errors: set[int]
) -> None:
    operation = spec["paths"][path][method]
    schemas = spec["components"]["schemas"]
    responses = operation["responses"]
    assert {int(status) for status in responses} == {200, *errors}
    success = responses["200"]["content"]["application/json"]["schema"]["$ref"]
    assert success.removeprefix("#/components/schemas/") in schemas
    for status in errors:
        error = responses[str(status)]["content"]["application/json"]["schema"]["$ref"]
        assert error == "#/components/schemas/ErrorOut"
    if has_body:
        body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert "required" in schemas[body.removeprefix("#/components/schemas/")]
    assert (operation.get("security") == [{"token": []}]) is (path not in PUBLIC)


async def test_openapi_declares_bearer_jwt(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["token"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


async def test_openapi_sms_schema_carries_contract_ranges(spec: dict[str, Any]) -> None:
    sms = spec["components"]["schemas"]["SmsCommand"]["properties"]
    assert (sms["sim"]["minimum"], sms["sim"]["maximum"]) == (1, 8)
    assert (sms["body"]["minLength"], sms["body"]["maxLength"]) == (1, 1600)
    assert sms["to"]["pattern"] == "^[0-9+*#]+$"


async def test_openapi_describes_health_with_its_own_body_on_503(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/health"]["get"]
    bodies = {
        int(status): response["content"]["application/json"]["schema"]["$ref"]
        for status, response in operation["responses"].items()
    }
    assert bodies == {200: "#/components/schemas/HealthOut", 503: "#/components/schemas/HealthOut"}
    assert "security" not in operation


async def test_openapi_describes_metrics_as_text_guarded_by_its_own_token(
    spec: dict[str, Any],
) -> None:
    operation = spec["paths"]["/metrics"]["get"]
    assert operation["tags"] == ["operations"]
    assert set(operation["responses"]["200"]["content"]) == {"text/plain"}
    error = operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
    assert error == "#/components/schemas/ErrorOut"
    # optional: the token is needed only when SIMBRIDGE_METRICS_TOKEN is set
    assert sorted(operation["security"], key=len) == [{}, {"metrics_token": []}]
    scheme = spec["components"]["securitySchemes"]["metrics_token"]
    assert scheme == {"type": "http", "scheme": "bearer"}
