"""The OpenAPI description served at /docs: every endpoint, its schemas, bearer auth, errors."""

from __future__ import annotations

import re
from base64 import b64encode
from hashlib import sha256
from pathlib import Path
from typing import Any

import httpx
import pytest
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

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
# The names generated clients give their functions (`api.auth.login`).
OPERATION_IDS = {
    ("/auth/register", "post"): "register",
    ("/auth/login", "post"): "login",
    ("/auth/password", "post"): "change_password",
    ("/auth/logout-all", "post"): "logout_all",
    ("/devices", "post"): "create_device",
    ("/devices", "get"): "list_devices",
    ("/devices/{device_id}/token", "post"): "rotate_device_token",
    ("/devices/{device_id}", "delete"): "delete_device",
    ("/pair", "post"): "create_pairing_code",
    ("/pair/confirm", "post"): "confirm_pairing_code",
    ("/pairings", "get"): "list_pairings",
    ("/pairings/{pairing_id}", "delete"): "delete_pairing",
    ("/sms", "post"): "send_sms",
    ("/call", "post"): "make_call",
    ("/sims", "get"): "get_sims",
    ("/commands/{req_id}", "get"): "get_command",
    ("/history", "get"): "list_history",
    ("/webhooks", "post"): "create_webhook",
    ("/webhooks", "get"): "list_webhooks",
    ("/webhooks/{webhook_id}", "delete"): "delete_webhook",
    ("/health", "get"): "get_health",
    ("/metrics", "get"): "get_metrics",
}
FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
SWAGGER_UI_FILES = Path(str(swagger_ui_path))


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


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


async def test_operation_ids_read_like_functions(spec: dict[str, Any]) -> None:
    ids = {(path, method): op.get("operationId") for path, method, op in operations(spec)}
    assert ids == OPERATION_IDS
    assert len(set(ids.values())) == len(ids)  # unique
    for path, method, op in operations(spec):
        operation_id = op["operationId"]
        assert FUNCTION_NAME.match(operation_id), (path, method, operation_id)
        # sanic-ext's own shape, `post~auth.login`, which a client generator turns into
        # `postauth_login`
        assert not operation_id.startswith(f"{method}{op['tags'][0]}"), operation_id


async def test_every_operation_has_one_described_tag_and_a_one_line_summary(
    spec: dict[str, Any],
) -> None:
    tags = {tag["name"]: tag.get("description") for tag in spec["tags"]}
    assert all(tags.values()), tags
    used = set()
    for path, method, op in operations(spec):
        assert len(op["tags"]) == 1 and op["tags"][0] in tags, (path, method, op["tags"])
        used.add(op["tags"][0])
        summary = op.get("summary")
        assert isinstance(summary, str) and summary.strip() and "\n" not in summary, (path, op)
    assert used == set(tags)  # no tag without operations


async def test_docs_page_loads_its_files_from_this_server(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(urls) == 3, urls  # the stylesheet and two scripts
    for url in urls:
        assert url.startswith("/docs/assets/swagger-ui/"), url
        reply = await http.get(url)
        assert reply.status_code == 200, url
        kind = "text/css" if url.endswith(".css") else "text/javascript"
        assert reply.headers["content-type"].startswith(kind), reply.headers
        assert reply.headers["cache-control"] == "public, max-age=31536000"
        shipped = SWAGGER_UI_FILES / url.rsplit("/", 1)[1].replace(".min.", ".")
        assert reply.content == shipped.read_bytes()


async def test_docs_page_policy_names_no_other_host(http: httpx.AsyncClient) -> None:
    """What the page may load, by its Content-Security-Policy: this server's files, its one
    inline script (by hash), inline styles and data: images; never another host."""
    page = await http.get("/docs")
    directives = [d.split() for d in page.headers["content-security-policy"].split(";")]
    policy = {name: sources for name, *sources in directives}
    assert policy["default-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]  # the document, and "Try it out"
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    digest = b64encode(sha256(inline[0].encode()).digest()).decode()
    assert policy["script-src"] == ["'self'", f"'sha256-{digest}'"]
    allowed = {"'self'", "'none'", "'unsafe-inline'", "data:"}
    for name, sources in policy.items():
        assert set(sources) - allowed <= {f"'sha256-{digest}'"}, (name, sources)


async def test_docs_assets_serve_nothing_else(http: httpx.AsyncClient) -> None:
    version = "/docs/assets/swagger-ui/4.15.5"
    for path in [
        f"{version}/index.html",
        f"{version}/..%2F..%2F__init__.py",
        f"{version}/swagger-ui-bundle.js",  # only the names the page asks for
        "/docs/assets/swagger-ui/9.9.9/swagger-ui-bundle.min.js",
    ]:
        reply = await http.get(path)
        assert reply.status_code == 404, path
        assert reply.headers["content-type"].startswith("application/json"), path
        assert "detail" in reply.json()


async def test_swagger_ui_asks_no_outside_validator(http: httpx.AsyncClient) -> None:
    config = (await http.get("/docs/swagger-config")).json()
    assert config["validatorUrl"] is None  # else a badge image from validator.swagger.io
    assert config["displayOperationId"] is True


async def test_oauth2_redirect_page_comes_from_the_package(http: httpx.AsyncClient) -> None:
    """sanic-ext's own handler fetches it from a CDN (a 500 where none can be reached)."""
    reply = await http.get("/docs/oauth2-redirect.html")
    assert reply.status_code == 200
    assert reply.content == (SWAGGER_UI_FILES / "oauth2-redirect.html").read_bytes()
    policy = reply.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'; script-src 'self' 'sha256-")
    (inline,) = re.findall(r"<script>(.*?)</script>", reply.text, re.DOTALL)
    assert f"'sha256-{b64encode(sha256(inline.encode()).digest()).decode()}'" in policy


async def test_redoc_is_not_offered(http: httpx.AsyncClient) -> None:
    """sanic-ext's Redoc page loads its script from a CDN and its fonts from Google."""
    assert (await http.get("/docs/redoc")).status_code == 404
