"""The alert listener: `python -m server listen --url URL --token T [--all] [--state-file F]`.

Prints one JSON line per `job-alert` on standard output, `{"event": "job-alert", "data": {...}}`,
and with `--all` also every `job-update`, `job-stats` and `resync`, for other programs to consume.
Log lines (connected, retrying...) go to standard error.

It connects with the token, and after every (re)connection resumes: the alerts raised while it
was away (`alerts_since`: the last moment it knew it was connected, minus a margin for clocks that
differ, with alert ids it already printed dropped) and, with `--all`, the job-updates after the
last event id it printed. A lost connection is retried with exponential backoff (1 s doubling up
to 60 s). `--state-file` keeps that position across restarts; without it a new listener starts
from now. Exit status: 0 when stopped (Ctrl-C, SIGTERM), 2 when the server refuses the token
(retrying would not help).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import socketio

from server.timeutil import iso, now_ms, parse_iso

logger = logging.getLogger(__name__)

CLOCK_MARGIN_MS = 60_000  # alerts replayed from this long before the last known connected moment
SEEN_ALERTS = 1000  # alert ids remembered for dropping repeats
MAX_DELAY = 60.0


class Refused(Exception):
    """The server will not accept this token."""


class Listener:
    """One listener: its position (event id, alert time, printed alert ids) and its connection."""

    def __init__(self, url: str, token: str, *, all_events: bool, state_file: str | None, out=None):
        self.url = url.rstrip("/")
        self.token = token
        self.all_events = all_events
        self.state_path = Path(state_file) if state_file else None
        self.out = out or sys.stdout
        self.user_id: int | None = None
        self.last_event_id: int | None = None  # own-user job-update printed last (with --all)
        self.connected_until = now_ms()  # the last moment this listener knew it was connected
        self.alerts_from = now_ms()  # the next resume asks for the alerts raised since then
        self.seen_alerts: deque[str] = deque(maxlen=SEEN_ALERTS)
        self._saved_at = 0.0
        self._load()

    # -- state -----------------------------------------------------------------------------
    def _load(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            state = json.loads(self.state_path.read_text())
            self.last_event_id = state.get("last_event_id")
            self.connected_until = parse_iso(state["connected_until"])
            self.alerts_from = self.connected_until - CLOCK_MARGIN_MS
            self.seen_alerts.extend(state.get("seen_alerts", []))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable state file %s: %s", self.state_path, exc)

    def save(self, force: bool = False) -> None:
        """Write the position (atomically; at most every second unless forced)."""
        if self.state_path is None or (not force and time.monotonic() - self._saved_at < 1.0):
            return
        self._saved_at = time.monotonic()
        state = {"last_event_id": self.last_event_id, "connected_until": iso(self.connected_until),
                 "seen_alerts": list(self.seen_alerts)}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    # -- output ----------------------------------------------------------------------------
    def _print(self, event: str, data: Any) -> None:
        self.out.write(json.dumps({"event": event, "data": data}, separators=(",", ":")) + "\n")
        self.out.flush()

    async def on_alert(self, alert: Any) -> None:
        if not isinstance(alert, dict) or alert.get("alert_id") in self.seen_alerts:
            return
        self.seen_alerts.append(alert.get("alert_id"))
        self._print("job-alert", alert)
        self.connected_until = now_ms()
        self.save(force=True)

    async def on_update(self, update: Any) -> None:
        if not self.all_events or not isinstance(update, dict):
            return
        job = update.get("job") or {}
        if job.get("user_id") == self.user_id:
            if self.last_event_id is not None and update.get("event_id", 0) <= self.last_event_id:
                return  # printed before (a replay that overlapped)
            self.last_event_id = update.get("event_id")
        self._print("job-update", update)
        self.connected_until = now_ms()
        self.save()

    async def on_other(self, event: str, data: Any) -> None:
        if self.all_events and event in ("job-stats", "resync"):
            self._print(event, data)

    # -- connection ------------------------------------------------------------------------
    async def whoami(self) -> dict:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{self.url}/api/auth/me", headers={"Authorization": f"Bearer {self.token}"})
        if response.status_code in (401, 403):
            raise Refused(_message(response))
        response.raise_for_status()
        return response.json()["user"]

    async def run(self, stop: asyncio.Event) -> int:
        delay = 1.0
        while not stop.is_set():
            try:
                me = await self.whoami()
                self.user_id = me["id"]
                await self._session(stop)
                delay = 1.0  # it was connected: start over with a short wait
            except Refused as exc:
                logger.error("the server refused the token: %s", exc)
                return 2
            except Exception as exc:
                logger.error("cannot reach %s (%s); trying again in %s seconds.", self.url, _brief(exc), delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, MAX_DELAY)
        return 0

    async def _session(self, stop: asyncio.Event) -> None:
        """One connection: connect, resume, print until it drops or the listener stops."""
        client = socketio.AsyncClient(reconnection=False)
        refusal: dict = {}
        client.on("job-alert", self.on_alert)
        client.on("job-update", self.on_update)
        client.on("*", self.on_other)
        client.on("connect_error", lambda data=None: refusal.update(data if isinstance(data, dict) else {}))
        try:
            try:
                await client.connect(self.url, auth={"token": self.token}, transports=["websocket"],
                                     wait_timeout=10)
            except socketio.exceptions.ConnectionError:
                if (refusal.get("data") or {}).get("code") in ("invalid_token", "unauthorized"):
                    raise Refused(refusal.get("message")) from None
                raise
            logger.info("connected to %s as user %s", self.url, self.user_id)
            request: dict = {"alerts_since": iso(self.alerts_from)}
            if self.all_events and self.last_event_id is not None:
                request["last_event_id"] = self.last_event_id
            ack = await client.call("resume", request, timeout=60)
            logger.info("resumed: %s", ack)
            while client.connected and not stop.is_set():
                self.connected_until = now_ms()
                self.save()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                except TimeoutError:
                    pass
            if not stop.is_set():
                logger.warning("disconnected from %s", self.url)
        finally:
            # next time, ask for what may have been raised since (repeats are dropped by id)
            self.alerts_from = self.connected_until - CLOCK_MARGIN_MS
            self.save(force=True)
            await client.disconnect()
            await client.shutdown()


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _brief(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def run_listener(url: str, token: str, all_events: bool = False, state_file: str | None = None) -> int:
    """The `listen` command: print alerts (and with all_events every event) until stopped."""
    listener = Listener(url, token, all_events=all_events, state_file=state_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await listener.run(stop)
    finally:
        listener.save(force=True)
