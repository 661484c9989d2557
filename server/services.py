"""The objects a running server is made of, built once in the lifespan and passed around."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .accounts import Accounts
from .audit import AuditLog
from .auth import Authenticator
from .clusters import ClusterRegistry
from .config import Settings
from .db import Db
from .jobs import JobStore
from .runner import JobRunner
from .upstream import TmsClient


@dataclass
class Services:
    """Everything a request handler or event handler may need; reached via `request.state`."""

    settings: Settings
    db: Db
    accounts: Accounts
    auth: Authenticator
    audit: AuditLog
    jobs: JobStore
    clusters: ClusterRegistry
    client: TmsClient
    runner: JobRunner
    # filled by the modules that own them (realtime, app-status cache); None when not running
    realtime: Any = None
    cache: Any = None
    scope: Any = None  # scope.JobScope: job customer states, app status and its watches
    extras: dict = field(default_factory=dict)
