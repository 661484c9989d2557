"""The objects a running server is made of, built once in the lifespan and passed around."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.accounts.store import Accounts
from server.accounts.audit import AuditLog
from server.accounts.auth import Authenticator
from server.upstream.clusters import ClusterRegistry
from server.config import Settings
from server.db import Db
from server.jobs.store import JobStore
from server.jobs.runner import JobRunner
from server.upstream.client import TmsClient


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
