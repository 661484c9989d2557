"""The API description (/openapi.json) holds for the running server: schemathesis generates requests
from it (valid and invalid ones) for every operation, and follows its links from a created record to
the operations on it, against a real server on SQLite, with a user's and an admin's token; each
answer must be no server error, and must have a status, content type and body the description gives.
/docs shows it, in Chromium.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")  # the [test] extras

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402 - after the skip above
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support import LiveServer, require_chromium, server_settings, unique  # noqa: E402

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# examples per operation (half of them valid, half not): enough to meet each parameter's edges,
# small enough for `make test` (about 50 operations)
EXAMPLES = 25
SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


class World:
    """The server, its two callers, and the records their requests may name."""

    def __init__(self, server: LiveServer):
        self.server = server
        user = server.create_user(unique("st-user"))
        admin = server.create_user(unique("st-admin"), role="admin")
        self.tokens = {"user": server.create_token(user, "write"), "admin": server.create_token(admin, "admin")}
        api = server.client(token=self.tokens["user"])
        self.job = api.wait_for(api.start(["C1", "C2"])["job_id"])
        self.token_ids = {token["id"] for token in api.get("/api/tokens").json()["tokens"]}
        self.token_ids |= {token["id"] for token in server.client(token=self.tokens["admin"])
                           .get("/api/tokens").json()["tokens"]}

    def headers(self, case) -> dict:
        """The admin's token on /admin, the user's elsewhere; none where the case sends its own."""
        if "authorization" in {name.lower() for name in (case.headers or {})}:
            return {}
        who = "admin" if case.path.startswith("/admin") else "user"
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def keep_own_tokens(self, case) -> None:
        """A generated token id that is one of the two tokens in use would revoke it mid-run."""
        if case.path == "/api/tokens/{token_id}" and (case.path_parameters or {}).get("token_id") in self.token_ids:
            case.path_parameters["token_id"] = 10**12


@pytest.fixture(scope="module")
def world(tmp_path_factory, simulator_session):
    folder = tmp_path_factory.mktemp("openapi")
    server = LiveServer(server_settings(folder, f"sqlite:///{folder / 'jobmon.db'}", {"sim": simulator_session.url}))
    try:
        yield World(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(world):
    return schemathesis.openapi.from_url(world.server.url + "/openapi.json")


def _fuzz(operation, mode, world) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, phases=[Phase.explicit, Phase.generate], **SETTINGS)
    def check(case):
        world.keep_own_tokens(case)
        case.call_and_validate(base_url=world.server.url, headers=world.headers(case), checks=CHECKS, timeout=30)

    check()


def test_every_operation_answers_as_described(world, api_schema):
    """Valid and invalid requests of every operation; every failure is reported, by operation."""
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 45
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, world)
            except Unsatisfiable:  # nothing to make invalid: no parameter, no body
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - each operation's failure is collected
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)


def test_links_from_created_records_hold(world, api_schema):
    """Stateful: a Set Action, a pipeline job, a deployment or a token just made, then the operations
    its answer links to (read it, cancel, retry, change its status, revoke it), in generated orders."""
    machine = api_schema.as_state_machine()

    class Workflow(machine):
        def get_call_kwargs(self, case):
            world.keep_own_tokens(case)
            return {"base_url": world.server.url, "headers": world.headers(case), "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS)

    Workflow.run(settings=settings(max_examples=80, stateful_step_count=8, **SETTINGS))


def test_the_description_has_every_route_with_its_models_and_credentials(world):
    spec = world.server.client().get("/openapi.json").json()
    assert spec["openapi"] == "3.1.0"
    operations = {(method, path): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert len(operations) >= 45
    assert ("get", "/") not in operations and ("get", "/docs") not in operations  # pages are not API
    create = operations[("post", "/api/set-actions")]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NewSetAction"}
    assert "multipart/form-data" in create["requestBody"]["content"]
    assert create["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SetActionAnswer"}
    assert create["responses"]["202"]["links"]["GetJob"] == {"operationId": "jobs_get_job",
                                                             "parameters": {"job_id": "$response.body#/job/job_id"}}
    for status in ("400", "401", "403", "413"):
        assert create["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}
    assert create["security"] == [{"bearerToken": []}, {"sessionCookie": []}] and create["x-scope"] == "write"
    assert operations[("post", "/api/auth/login")]["security"] == []
    assert operations[("get", "/admin/jobs/stats")]["x-scope"] == "admin"
    mine = {parameter["name"]: parameter for parameter in operations[("get", "/api/jobs/mine")]["parameters"]}
    assert mine["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    assert operations[("get", "/api/jobs/{job_id}")]["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    schemas = spec["components"]["schemas"]
    assert set(schemas["Job"]["properties"]) == set(world.job)
    assert schemas["Error"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert set(spec["components"]["securitySchemes"]) == {"bearerToken", "sessionCookie"}
    assert len({op["operationId"] for op in operations.values()}) == len(operations)


def test_the_models_check_queries_and_bodies_naming_the_field(world):
    api = world.server.client(token=world.tokens["user"])
    job_id = world.job["job_id"]
    for path, params, field in [("/api/jobs/mine", {"limit": "0"}, "limit"), ("/api/jobs/mine", {"limit": " 5"}, "limit"),
                                (f"/api/jobs/{job_id}/customers", {"limit": "1e3"}, "limit"),
                                (f"/api/jobs/{job_id}/appstatus", {"skip_cache": "maybe"}, "skip_cache"),
                                ("/api/dashboard/jobs", {"colour": "red"}, "colour"),
                                ("/api/tokens", {"all": "perhaps"}, "all")]:
        answer = api.get(path, params=params)
        assert answer.status_code == 400, (path, params, answer.text)
        assert answer.json()["error"]["details"]["field"] == field
    for path, body, field in [("/api/tokens", {"scope": "root"}, "scope"), ("/api/tokens", {"name": 5}, "name"),
                              ("/api/dashboard/jobs", {"job_type": "build", "repo": "r", "agent_id": "a", "tags": [1]},
                               "tags.0"),
                              ("/api/cache/invalidate", {"job_id": job_id, "colour": "red"}, "colour")]:
        answer = api.post(path, json=body)
        assert answer.status_code == 400, (path, body, answer.text)
        assert answer.json()["error"]["details"]["field"] == field
    # the admin's routes say 403 to a user before they look at a parameter
    assert api.get("/admin/jobs", params={"limit": "nope"}).status_code == 403


@pytest.mark.browser
def test_the_docs_page_shows_every_operation_in_chromium(world):
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox",
                                                                             "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: problems.append(f"console: {message.text}")
                    if message.type == "error" else None)
            page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
            page.goto(world.server.url + "/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("Job Monitor", timeout=15_000)
            expect(page.locator(".opblock-summary-path[data-path='/api/set-actions']")).to_have_count(1)
            assert page.locator(".opblock").count() >= 45
            page.locator(".opblock-summary-path[data-path='/api/set-actions']").click()
            expect(page.locator(".opblock.is-open .response-col_status").first).to_be_visible()
            assert "202" in page.locator(".opblock.is-open").inner_text()
        finally:
            browser.close()
    assert not problems, problems
