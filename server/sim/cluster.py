"""The simulated TMS cluster: a Starlette app serving the upstream cluster API.

It stands in for an external system, so its state (customers, seen request ids, counters) lives
in memory on one `SimulatedCluster` per app. Knobs inject latency, failures, timeouts and malformed
answers; the `/_sim/...` control routes read and change them at run time. Who may use those routes
is the caller's choice (`control_guard`): the standalone simulator leaves them open, Job Monitor's
embedded one lets only admins in unless it runs in demo mode. An Authorization header the cluster
receives is never kept: the stats show a keyed fingerprint of the last one at most.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import enum
import hashlib
import hmac
import json
import math
import random
import secrets
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.parsing import is_int as _is_int
from server.parsing import parse_bool

# Remembered request ids are capped both by count and by the customer results they hold, so a
# long demo cannot grow memory without bound; the oldest are dropped first.
MAX_REQUEST_IDS = 200_000
MAX_STORED_RESULTS = 2_000_000
MAX_APPSTATUS_CIDS = 1000
MAX_SEED_CUSTOMERS = 999_999  # seeded cids are "C" + 6 digits
MAX_PAGE_SIZE = 10_000
# A set-action batch is at most 1,000 customers (JOBMON_BATCH_SIZE), well under this; anything
# bigger is refused before it is read into memory, on the open API as on the controls.
MAX_BODY_BYTES = 4 * 1024 * 1024
ENV_PREFIX = "JOBMON_SIM_"
HIDDEN = "(hidden)"  # what the knob answers show for a required_token that is set

# Called before every /_sim control route; it refuses a caller by raising (the app's exception
# handlers turn that into the answer), and returns None to let the caller in.
ControlGuard = Callable[[Request], Awaitable[None]]


class CustomerState(str, enum.Enum):
    """State of one customer in the simulated cluster."""

    ACTIVE = "ACTIVE"  # seeded, no action taken yet
    TRANSITIONING = "TRANSITIONING"  # after Trans-Begin (1)
    PE_ENABLED = "PE_ENABLED"  # after PE-Enable (2)
    T_ENABLED = "T_ENABLED"  # after T-Enable (3)
    FINALIZED = "FINALIZED"  # after PE-Finalize (4)
    PE_DIRECT = "PE_DIRECT"  # after PE-Direct (5)


STATE_BY_ACTION_CODE = {
    1: CustomerState.TRANSITIONING,
    2: CustomerState.PE_ENABLED,
    3: CustomerState.T_ENABLED,
    4: CustomerState.FINALIZED,
    5: CustomerState.PE_DIRECT,
}

# Field kind -> what a wrong value is told it should be; the kind also picks the parser below.
_EXPECTED = {
    "duration": "a non-negative number",
    "rate": "a number from 0 to 1",
    "status": "an HTTP error status from 400 to 599, or null",
    "text": "a string, or null",
    "cid_errors": "an object mapping customer ids to error messages",
    "cids": "a list of customer id strings",
    "flag": "true or false",
    "page_size": f"an integer from 1 to {MAX_PAGE_SIZE}",
    "seed": f"an integer from 0 to {MAX_SEED_CUSTOMERS}",
}

_KNOB_KINDS = {
    "latency_ms": "duration",
    "latency_jitter_ms": "duration",
    "failure_rate": "rate",
    "fail_cids": "cid_errors",
    "set_action_status": "status",
    "set_action_error": "text",
    "hang_seconds": "duration",
    "malformed": "flag",
    "appstatus_batch_enabled": "flag",
    "appstatus_batch_status": "status",
    "appstatus_fail_cids": "cids",
    "states_page_size": "page_size",
    "required_token": "text",
    "seed_customers": "seed",
}


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `true` is never meant as a number here.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _valid(kind: str, value: Any) -> bool:
    """True if `value` is acceptable for a knob of this kind."""
    if kind == "duration":
        return _is_number(value) and value >= 0
    if kind == "rate":
        return _is_number(value) and 0 <= value <= 1
    if kind == "status":
        return value is None or (_is_int(value) and 400 <= value <= 599)
    if kind == "text":
        return value is None or isinstance(value, str)
    if kind == "cid_errors":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
    if kind == "cids":
        return isinstance(value, list) and all(isinstance(c, str) for c in value)
    if kind == "flag":
        return isinstance(value, bool)
    if kind == "page_size":
        return _is_int(value) and 1 <= value <= MAX_PAGE_SIZE
    if kind == "seed":
        return _is_int(value) and 0 <= value <= MAX_SEED_CUSTOMERS
    raise AssertionError(f"unknown knob kind {kind!r}")


@dataclass
class SimulatorKnobs:
    """Behaviour switches of the simulated cluster; validated on construction."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    failure_rate: float = 0.0
    fail_cids: dict[str, str] = field(default_factory=dict)
    set_action_status: int | None = None
    set_action_error: str | None = None
    hang_seconds: float = 0.0
    malformed: bool = False
    appstatus_batch_enabled: bool = True
    appstatus_batch_status: int | None = None
    appstatus_fail_cids: list[str] = field(default_factory=list)
    states_page_size: int = 100
    required_token: str | None = None
    seed_customers: int = 0

    def __post_init__(self) -> None:
        for name, kind in _KNOB_KINDS.items():
            if not _valid(kind, getattr(self, name)):
                raise ValueError(f"Knob '{name}' must be {_EXPECTED[kind]}.")


def _parse_env_value(kind: str, text: str) -> Any:
    """Turn one environment string into a knob value of this kind, or raise ValueError."""
    if kind in ("duration", "rate"):
        return float(text)
    if kind in ("status", "page_size", "seed"):
        return int(text)
    if kind == "flag":
        return parse_bool(text)
    if kind == "cids":
        return [c.strip() for c in text.split(",") if c.strip()]
    if kind == "cid_errors":
        # "C1=message,C2": a cid without a message gets a generic one.
        errors = {}
        for item in text.split(","):
            cid, _, message = item.partition("=")
            if cid.strip():
                errors[cid.strip()] = message.strip() or "simulated failure"
        return errors
    return text


def knobs_from_env(environ: Mapping[str, str]) -> SimulatorKnobs:
    """Build knobs from JOBMON_SIM_<KNOB NAME> variables; unset or empty ones keep the default."""
    values: dict[str, Any] = {}
    for name, kind in _KNOB_KINDS.items():
        key = ENV_PREFIX + name.upper()
        text = environ.get(key, "")
        if text == "":
            continue
        try:
            value = _parse_env_value(kind, text)
            if not _valid(kind, value):
                raise ValueError(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is invalid: expected {_EXPECTED[kind]}.") from None
        values[name] = value
    return SimulatorKnobs(**values)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def app_status_for(cid: str, known: bool) -> tuple[str, str]:
    """The (status, detail) the simulator reports for a cid; "unknown" if never seen."""
    if not known:
        return "unknown", "customer not known to the cluster"
    # crc32 is stable across processes, unlike hash(): the same cid always gets the same status.
    bucket = zlib.crc32(cid.encode()) % 100
    if bucket < 80:
        return "healthy", "all apps responding"
    if bucket < 93:
        return "warning", "one app responding slowly"
    return "error", "one app not responding"


class SimulatedCluster:
    """State and knobs of one simulated TMS cluster, with its HTTP handlers."""

    def __init__(self, knobs: SimulatorKnobs | None = None, rng: random.Random | None = None,
                 control_guard: ControlGuard | None = None):
        self._initial_knobs = copy.deepcopy(knobs or SimulatorKnobs())
        self.rng = rng or random.Random()
        self._control_guard = control_guard  # None: the controls are open to whoever reaches them
        # fingerprints are keyed by a secret drawn for this cluster (never shown), so a short or
        # guessable token cannot be found from its fingerprint by hashing candidates
        self._fingerprint_key = secrets.token_bytes(32)
        self._in_flight = 0  # set-action calls open now (not reset: some may still be running)
        self.reset()

    def reset(self) -> None:
        """Forget customers, request ids and counters; knobs go back to the initial ones."""
        self.knobs = copy.deepcopy(self._initial_knobs)
        self.customers: dict[str, dict[str, Any]] = {}
        self._sorted_cids: list[str] | None = None  # rebuilt when a new customer appears
        self._answers: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._stored_results = 0
        self.stats: dict[str, Any] = {
            "set_action_calls": 0,
            "set_action_max_in_flight": 0,  # the most set-action calls open at once
            "duplicate_batches": 0,
            "customers_applied": 0,
            "states_calls": 0,
            "appstatus_batch_calls": 0,
            "appstatus_single_calls": 0,
            "authorized_calls": 0,  # upstream calls that came with an Authorization header
            "last_authorization_fingerprint": None,  # fingerprint() of the last one; never the value
            "request_ids": 0,
        }
        self._seed(self.knobs.seed_customers)

    def __repr__(self) -> str:
        return f"<SimulatedCluster customers={len(self.customers)} request_ids={len(self._answers)}>"

    def fingerprint(self, authorization: str) -> str:
        """A short keyed hash of an Authorization value: tells two values apart, reveals neither."""
        return hmac.new(self._fingerprint_key, authorization.encode(), hashlib.sha256).hexdigest()[:16]

    def _seed(self, count: int) -> None:
        now = _now_iso()
        for n in range(1, count + 1):
            cid = f"C{n:06d}"
            if cid not in self.customers:
                self.customers[cid] = {"state": CustomerState.ACTIVE.value, "last_action": None,
                                       "updated_at": now}
                self._sorted_cids = None

    def _remember(self, request_id: str, body: bytes, results: int) -> None:
        self._answers[request_id] = (body, results)
        self._stored_results += results
        while len(self._answers) > MAX_REQUEST_IDS or self._stored_results > MAX_STORED_RESULTS:
            _, (_, dropped) = self._answers.popitem(last=False)
            self._stored_results -= dropped
        self.stats["request_ids"] = len(self._answers)

    async def _gate(self, request: Request) -> Response | None:
        """Latency and auth shared by every /tms/v1 call; a response here ends the call."""
        authorization = request.headers.get("authorization")
        if authorization is not None:
            self.stats["authorized_calls"] += 1
        self.stats["last_authorization_fingerprint"] = (
            None if authorization is None else self.fingerprint(authorization))
        knobs = self.knobs
        delay_ms = knobs.latency_ms + self.rng.uniform(0, knobs.latency_jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if knobs.required_token is not None:
            expected = f"Bearer {knobs.required_token}"
            if not hmac.compare_digest((authorization or "").encode(), expected.encode()):
                response = _error(401, "missing or invalid bearer token")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return None

    @staticmethod
    async def _json_object(request: Request) -> dict[str, Any] | Response:
        """The body as a JSON object, or the 400 or 413 answer to give instead."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:  # stop reading: a body without a length is capped too
                return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError):
            body = None
        return body if isinstance(body, dict) else _error(400, "body must be a JSON object")

    async def set_action(self, request: Request) -> Response:
        """POST /tms/v1/set-action: apply an action to customers, once per request_id."""
        self.stats["set_action_calls"] += 1
        self._in_flight += 1
        self.stats["set_action_max_in_flight"] = max(self.stats["set_action_max_in_flight"], self._in_flight)
        try:
            return await self._set_action(request)
        finally:
            self._in_flight -= 1

    async def _set_action(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        body = await self._json_object(request)
        if isinstance(body, Response):
            return body
        action, code = body.get("action"), body.get("action_code")
        cids, request_id = body.get("customer_ids"), body.get("request_id")
        if not isinstance(action, str) or not action:
            return _error(400, "'action' must be a non-empty string")
        if not _is_int(code) or code not in STATE_BY_ACTION_CODE:
            return _error(400, "'action_code' must be an integer from 1 to 5")
        if not (isinstance(cids, list) and cids and all(isinstance(c, str) and c for c in cids)):
            return _error(400, "'customer_ids' must be a non-empty list of non-empty strings")
        if not isinstance(request_id, str) or not request_id:
            return _error(400, "'request_id' must be a non-empty string")

        # Fault knobs come before anything is recorded, so a rejected batch changes nothing.
        # A hang only delays: the batch is then applied, as a slow real cluster would do.
        knobs = self.knobs
        if knobs.hang_seconds > 0:
            await asyncio.sleep(knobs.hang_seconds)
        if knobs.set_action_status is not None:
            return _error(knobs.set_action_status, f"simulated HTTP {knobs.set_action_status}")
        if knobs.set_action_error is not None:
            return JSONResponse({"success": False, "error": knobs.set_action_error})
        if knobs.malformed:
            return Response(b"{this is not json", media_type="application/json")

        if request_id in self._answers:
            self.stats["duplicate_batches"] += 1
            return Response(self._answers[request_id][0], media_type="application/json")

        state = STATE_BY_ACTION_CODE[code].value
        now = _now_iso()
        results: dict[str, dict[str, Any]] = {}
        for cid in cids:
            if cid in knobs.fail_cids:
                results[cid] = {"ok": False, "error": knobs.fail_cids[cid]}
                continue
            if knobs.failure_rate > 0 and self.rng.random() < knobs.failure_rate:
                results[cid] = {"ok": False, "error": "simulated failure"}
                continue
            if cid not in self.customers:
                self._sorted_cids = None
            self.customers[cid] = {"state": state, "last_action": action, "updated_at": now}
            results[cid] = {"ok": True}
            self.stats["customers_applied"] += 1
        response = JSONResponse({"success": True, "results": results})
        self._remember(request_id, response.body, len(results))
        return response

    async def customer_states(self, request: Request) -> Response:
        """GET /tms/v1/customers/states?page=N: all known customers sorted by cid, paged."""
        self.stats["states_calls"] += 1
        if (denied := await self._gate(request)) is not None:
            return denied
        raw = request.query_params.get("page", "1")
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            return _error(400, "'page' must be an integer from 1")
        page, size = int(raw), self.knobs.states_page_size
        if self._sorted_cids is None:
            self._sorted_cids = sorted(self.customers)
        chunk = self._sorted_cids[(page - 1) * size : page * size]
        more = page * size < len(self._sorted_cids)
        return JSONResponse({
            "customers": [{"cid": cid, **self.customers[cid]} for cid in chunk],
            "next_page": page + 1 if more else None,
        })

    def _status_entry(self, cid: str, app: str) -> dict[str, str]:
        status, detail = app_status_for(cid, cid in self.customers)
        return {"app": app, "status": status, "detail": detail}

    async def appstatus_batch(self, request: Request) -> Response:
        """POST /tms/v1/appstatus/batch: app status for up to 1000 cids."""
        self.stats["appstatus_batch_calls"] += 1
        if (denied := await self._gate(request)) is not None:
            return denied
        knobs = self.knobs
        if not knobs.appstatus_batch_enabled:
            return _error(404, "not found")
        if knobs.appstatus_batch_status is not None:
            return _error(knobs.appstatus_batch_status,
                          f"simulated HTTP {knobs.appstatus_batch_status}")
        body = await self._json_object(request)
        if isinstance(body, Response):
            return body
        cids, app = body.get("cids"), body.get("app", "ALL")
        if not isinstance(cids, list) or not all(isinstance(c, str) and c for c in cids):
            return _error(400, "'cids' must be a list of non-empty strings")
        if len(cids) > MAX_APPSTATUS_CIDS:
            return _error(400, f"at most {MAX_APPSTATUS_CIDS} cids per call")
        if not isinstance(app, str) or not app:
            return _error(400, "'app' must be a non-empty string")
        failing = set(knobs.appstatus_fail_cids)
        return JSONResponse({"statuses": {
            cid: self._status_entry(cid, app) for cid in cids if cid not in failing
        }})

    async def appstatus_single(self, request: Request) -> Response:
        """GET /tms/v1/appstatus/{cid}?app=ALL: app status of one cid."""
        self.stats["appstatus_single_calls"] += 1
        if (denied := await self._gate(request)) is not None:
            return denied
        cid = request.path_params["cid"]
        app = request.query_params.get("app") or "ALL"
        if cid in self.knobs.appstatus_fail_cids:
            return _error(500, "simulated HTTP 500")
        return JSONResponse({"cid": cid, **self._status_entry(cid, app)})

    async def _allow_control(self, request: Request) -> None:
        """Let the caller use a control route, or raise what the guard raises."""
        if self._control_guard is not None:
            await self._control_guard(request)

    @staticmethod
    def _knobs_answer(knobs: SimulatorKnobs) -> JSONResponse:
        # the token the cluster requires is an authorization value: it is set, never shown
        shown = dataclasses.asdict(knobs)
        if shown["required_token"] is not None:
            shown["required_token"] = HIDDEN
        return JSONResponse(shown)

    async def get_knobs(self, request: Request) -> Response:
        """GET /_sim/knobs: the current knobs."""
        await self._allow_control(request)
        return self._knobs_answer(self.knobs)

    async def put_knobs(self, request: Request) -> Response:
        """PUT /_sim/knobs: change some knobs; all or nothing."""
        await self._allow_control(request)
        body = await self._json_object(request)
        if isinstance(body, Response):
            return body
        unknown = sorted(set(body) - set(_KNOB_KINDS))
        if unknown:
            return _error(400, f"unknown knob(s): {', '.join(unknown)}")
        try:
            knobs = dataclasses.replace(self.knobs, **body)
        except ValueError as exc:
            return _error(400, str(exc))
        self.knobs = knobs
        # Raising seed_customers adds the missing seeded customers now; it never removes any.
        self._seed(knobs.seed_customers)
        return self._knobs_answer(knobs)

    async def post_reset(self, request: Request) -> Response:
        """POST /_sim/reset: back to the state the app was created with."""
        await self._allow_control(request)
        self.reset()
        return JSONResponse({"reset": True})

    async def get_stats(self, request: Request) -> Response:
        """GET /_sim/stats: the counters."""
        await self._allow_control(request)
        return JSONResponse(self.stats)

    def routes(self) -> list[Route]:
        """The TMS API and control routes, relative to the app root."""
        return [
            Route("/tms/v1/set-action", self.set_action, methods=["POST"]),
            Route("/tms/v1/customers/states", self.customer_states, methods=["GET"]),
            # Before the {cid} route, so "batch" is never taken for a cid on POST.
            Route("/tms/v1/appstatus/batch", self.appstatus_batch, methods=["POST"]),
            Route("/tms/v1/appstatus/{cid}", self.appstatus_single, methods=["GET"]),
            Route("/_sim/knobs", self.get_knobs, methods=["GET"]),
            Route("/_sim/knobs", self.put_knobs, methods=["PUT"]),
            Route("/_sim/reset", self.post_reset, methods=["POST"]),
            Route("/_sim/stats", self.get_stats, methods=["GET"]),
        ]


def create_simulator_app(knobs: SimulatorKnobs | None = None, *,
                         control_guard: ControlGuard | None = None) -> Starlette:
    """A Starlette app serving one simulated cluster; `app.state.simulator` holds it.

    `control_guard` decides who may use the `/_sim` controls; without one they are open, as suits
    the standalone simulator on a loopback port. The TMS API itself is never guarded here (the
    `required_token` knob does that)."""
    simulator = SimulatedCluster(knobs, control_guard=control_guard)
    app = Starlette(routes=simulator.routes())
    app.state.simulator = simulator
    return app
