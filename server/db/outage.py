"""What a database outage looks like: the driver errors that mean "the database cannot serve now"
(not "this request is wrong"), as the errors a client sees, and the one log line per outage.

`Db` translates them (`translated`), so the rest of the server meets a `DatabaseOutage`
(server/errors.py): a request answers 503 (507 for a full disk) with `Retry-After`, and background
work pauses (`OutageLog` says so once, and once again when the database answers).
"""

from __future__ import annotations

import logging
import sqlite3
import time

import asyncpg

from server.errors import DatabaseFull, DatabaseOutage, DatabaseReadOnly

# PostgreSQL: the server is down, restarting, shutting down, or refusing connections
_PG_DOWN = (asyncpg.exceptions.PostgresConnectionError, asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError,
            asyncpg.exceptions.TooManyConnectionsError)

DOWN = "The database is unavailable; nothing was changed. Try again in a few seconds"


def classify(exc: BaseException) -> DatabaseOutage | None:
    """The outage this driver error means, or None when it is not one (a bug, a constraint...).

    Only errors raised by the database layer are classified: there an OSError (refused, reset,
    timed out) is the connection to the database failing."""
    seen = 0
    while exc is not None and seen < 5:  # the error itself, then what it was raised from
        outage = _one(exc)
        if outage is not None:
            return outage
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _one(exc: BaseException) -> DatabaseOutage | None:
    if isinstance(exc, DatabaseOutage):
        return exc
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith("SQLITE_FULL"):
            return DatabaseFull("The database's disk is full: the change was not saved (nothing of it was "
                                "written). Reads still work; free disk space to save changes again",
                                details={"reason": name})
        if name.startswith("SQLITE_READONLY"):
            return DatabaseReadOnly("The database is read-only: the change was not saved (nothing of it was "
                                    "written). Reads still work", details={"reason": name})
        if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
            return DatabaseOutage("The database's files could not be written or read: the change was not "
                                  "saved (nothing of it was written). Try again later", details={"reason": name})
        return None
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return DatabaseReadOnly("The database is read-only (a standby?): the change was not saved. "
                                "Reads still work", details={"reason": type(exc).__name__})
    if isinstance(exc, asyncpg.exceptions.DiskFullError):
        return DatabaseFull("The database's disk is full: the change was not saved",
                            details={"reason": type(exc).__name__})
    if isinstance(exc, _PG_DOWN) or isinstance(exc, OSError) or (
            isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)) or (
            # an idle pooled connection that got the server's shutdown notice (FATAL 57P01) just
            # before its socket closed: asyncpg's protocol is still consuming that error
            isinstance(exc, asyncpg.exceptions.InternalClientError) and "cannot switch to state" in str(exc)):
        return DatabaseOutage(DOWN, details={"reason": type(exc).__name__})
    return None


def translated(exc: BaseException) -> BaseException:
    """The DatabaseOutage an error means (raised `from` it), or the error itself."""
    outage = classify(exc)
    if outage is None or outage is exc:
        return exc
    outage.__cause__ = exc
    return outage


class OutageLog:
    """Logs once that some background work pauses for a database outage, and once that it resumed:
    one line each way, not a traceback per attempt."""

    def __init__(self, logger: logging.Logger, what: str):
        self._logger = logger
        self.what = what
        self.since: float | None = None  # time.monotonic() of the first failure of this outage

    def __repr__(self) -> str:
        return f"OutageLog({self.what!r}, paused={self.since is not None})"

    @property
    def paused(self) -> bool:
        return self.since is not None

    def failed(self, outage: DatabaseOutage, retry_in: float) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self._logger.warning("%s paused: %s (%s); trying again every %s seconds until it answers.",
                                 self.what, outage.code, (outage.details or {}).get("reason", outage.message),
                                 retry_in)

    def succeeded(self) -> None:
        if self.since is not None:
            self._logger.warning("%s resumed: the database answers again (paused for %.1f s).",
                                 self.what, time.monotonic() - self.since)
            self.since = None
