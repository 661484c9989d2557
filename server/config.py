"""Settings from the environment, every variable prefixed `JOBMON_`.

A wrong value stops start-up with a `ConfigError` naming the variable, the value and what was
expected. Everything is optional: the defaults give the embedded set-up (SQLite file under
`./data`, in-process Socket.IO manager, the simulated cluster mounted at `/sim`).
"""

from __future__ import annotations

import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from server.parsing import parse_bool

PREFIX = "JOBMON_"
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "xxx", "todo"}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the server reads from its environment, validated."""

    data_dir: Path = Path("data")
    database_url: str = ""
    redis_url: str = ""
    secret_key: str = ""
    clusters_file: str = ""
    allowed_origins: tuple[str, ...] = ()
    upstream_timeout: float = 30.0
    database_connect_timeout: float = 5.0  # PostgreSQL: opening a connection, before a request answers 503
    upstream_connections: int = 100
    batch_size: int = 100
    batch_concurrency: int = 4
    job_concurrency: int = 8
    max_cids: int = 100_000
    max_upload_bytes: int = 5 * 1024 * 1024
    appstatus_ttl: int = 1800
    appstatus_batch_size: int = 500
    appstatus_concurrency: int = 8
    appstatus_cleanup_interval: float = 60.0
    states_max_pages: int = 10_000
    stats_interval: float = 5.0  # seconds between periodic job-stats (DESIGN: every 5 s)
    stuck_after: float = 900.0
    cluster_alert_after: int = 5
    socket_revalidate: float = 5.0
    catchup_interval: float = 3.0  # seconds between sweeps for events the bus lost; 0: only after a reconnection
    redis_channel: str = "jobmon"
    lease_seconds: float = 15.0
    event_retention_days: int = 30
    retention_days: int = 90  # finished jobs' customer rows; 0 keeps them forever
    retention_interval: float = 3600.0
    retention_chunk: int = 2000
    session_days: int = 7
    demo: bool = False
    secure_cookies: bool = False
    login_attempts: int = 5
    login_window: float = 300.0
    rate_limit: int = 600  # HTTP API requests per minute per token, session or anonymous client address; 0: off
    rate_burst: int = 120  # requests allowed at once, on top of that pace
    metrics: bool = True  # serve /metrics (False: 404)
    metrics_token: str = ""  # when set, /metrics wants 'Authorization: Bearer <it>'
    log_level: str = "INFO"
    pipeline_timeout: float = 3600.0  # a running pipeline job with no sign of life this long times out
    regression_window: float = 1800.0  # seconds of Set Actions compared before and after a deployment
    regression_rate: float = 0.10  # failure-rate rise (absolute) that makes a deploy_regression alert
    regression_min_customers: int = 20  # customers answered after the deployment for a verdict
    system_interval: float = 5.0  # seconds between a node's reports of its own system metrics
    sim_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def embedded_simulator(self) -> bool:
        """The simulated cluster is mounted in-process unless a clusters file replaces it."""
        return not self.clusters_file

    def __repr__(self) -> str:  # passwords in URLs stay out of logs
        return f"Settings(database_url={_obscured(self.database_url)!r}, redis_url={_obscured(self.redis_url)!r}, ...)"


def _obscured(url: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected an integer {bound}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a number of seconds") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a number >= {minimum}")
    return value


def _rate(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a fraction between 0 and 1, like 0.10")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return parse_bool(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected true or false") from None


def _database_url(env: Mapping[str, str], data_dir: Path) -> str:
    raw = env.get(PREFIX + "DATABASE_URL", "").strip()
    if not raw:
        return f"sqlite:///{data_dir / 'jobmon.db'}"
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://"):]
    if not raw.startswith(("sqlite:///", "postgresql://", "postgresql+asyncpg://")):
        raise ConfigError(
            f"{PREFIX}DATABASE_URL={raw!r}: expected sqlite:///path or postgresql://user@host/db"
        )
    return raw


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get(PREFIX + "ALLOWED_ORIGINS", "").strip()
    if not raw:
        return ()
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if not origin.startswith(("http://", "https://")):
            raise ConfigError(
                f"{PREFIX}ALLOWED_ORIGINS contains {origin!r}: expected comma-separated "
                "origins like https://jobs.example.com"
            )
    return origins


def _channel(env: Mapping[str, str]) -> str:
    raw = env.get(PREFIX + "REDIS_CHANNEL", "").strip() or "jobmon"
    if len(raw) > 100 or not all(c.isalnum() or c in "-_.:" for c in raw):
        raise ConfigError(f"{PREFIX}REDIS_CHANNEL={raw!r}: expected up to 100 letters, digits, '-', '_', '.', ':'")
    return raw


def _secret_key(env: Mapping[str, str], data_dir: Path) -> str:
    """The configured key, or one generated on first start and kept in the data directory."""
    raw = env.get(PREFIX + "SECRET_KEY", "")
    if raw:
        if raw.lower() in PLACEHOLDER_SECRETS or len(raw) < 16:
            raise ConfigError(
                f"{PREFIX}SECRET_KEY is a placeholder or shorter than 16 characters: "
                "expected a long random string (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return raw
    key_file = data_dir / "secret_key"
    try:
        if key_file.exists():
            return key_file.read_text().strip()
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        key_file.write_text(key)
        key_file.chmod(0o600)
    except OSError as exc:
        raise ConfigError(f"{PREFIX}DATA_DIR={str(data_dir)!r}: cannot keep the generated secret key there "
                          f"({exc.strerror or exc}); make it writable or set {PREFIX}SECRET_KEY") from None
    return key


def _metrics_token(env: Mapping[str, str]) -> str:
    raw = env.get(PREFIX + "METRICS_TOKEN", "").strip()
    if raw and (raw.lower() in PLACEHOLDER_SECRETS or len(raw) < 16 or not raw.isprintable() or " " in raw):
        raise ConfigError(f"{PREFIX}METRICS_TOKEN is a placeholder, shorter than 16 characters or has spaces: "
                          "expected a long random string, which the scraper sends as 'Authorization: Bearer <token>'")
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError naming the first wrong variable."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get(PREFIX + "DATA_DIR", "data"))
    redis_url = env.get(PREFIX + "REDIS_URL", "").strip()
    if redis_url and not redis_url.startswith(("redis://", "rediss://")):
        raise ConfigError(f"{PREFIX}REDIS_URL={redis_url!r}: expected redis://host:port/db")
    clusters_file = env.get(PREFIX + "CLUSTERS_FILE", "").strip()
    if clusters_file and not Path(clusters_file).is_file():
        raise ConfigError(f"{PREFIX}CLUSTERS_FILE={clusters_file!r}: no such file")
    log_level = env.get(PREFIX + "LOG_LEVEL", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"{PREFIX}LOG_LEVEL={log_level!r}: expected DEBUG, INFO, WARNING or ERROR")
    catchup_interval = _float(env, "CATCHUP_INTERVAL", 3.0)
    if 0 < catchup_interval < 0.1:
        raise ConfigError(f"{PREFIX}CATCHUP_INTERVAL={env[PREFIX + 'CATCHUP_INTERVAL']!r}: expected 0 (no periodic "
                          "catch-up) or a number of seconds >= 0.1")
    return Settings(
        data_dir=data_dir,
        database_url=_database_url(env, data_dir),
        redis_url=redis_url,
        secret_key=_secret_key(env, data_dir),
        clusters_file=clusters_file,
        allowed_origins=_origins(env),
        upstream_timeout=_float(env, "UPSTREAM_TIMEOUT", 30.0, minimum=0.05),
        database_connect_timeout=_float(env, "DATABASE_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        upstream_connections=_int(env, "UPSTREAM_CONNECTIONS", 100, minimum=1, maximum=10_000),
        batch_size=_int(env, "BATCH_SIZE", 100, minimum=1, maximum=1000),
        batch_concurrency=_int(env, "BATCH_CONCURRENCY", 4, minimum=1, maximum=64),
        job_concurrency=_int(env, "JOB_CONCURRENCY", 8, minimum=1, maximum=256),
        max_cids=_int(env, "MAX_CIDS", 100_000, minimum=1),
        max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 5 * 1024 * 1024, minimum=1024),
        appstatus_ttl=_int(env, "APPSTATUS_TTL", 1800, minimum=1, maximum=7 * 86_400),
        appstatus_batch_size=_int(env, "APPSTATUS_BATCH_SIZE", 500, minimum=1, maximum=1000),
        appstatus_concurrency=_int(env, "APPSTATUS_CONCURRENCY", 8, minimum=1, maximum=64),
        appstatus_cleanup_interval=_float(env, "APPSTATUS_CLEANUP_INTERVAL", 60.0, minimum=0.1),
        states_max_pages=_int(env, "STATES_MAX_PAGES", 10_000, minimum=1),
        stats_interval=_float(env, "STATS_INTERVAL", 5.0, minimum=0.1),
        stuck_after=_float(env, "STUCK_AFTER", 900.0, minimum=1.0),
        cluster_alert_after=_int(env, "CLUSTER_ALERT_AFTER", 5, minimum=1, maximum=10_000),
        socket_revalidate=_float(env, "SOCKET_REVALIDATE", 5.0, minimum=0.1),
        catchup_interval=catchup_interval,
        redis_channel=_channel(env),
        lease_seconds=_float(env, "LEASE_SECONDS", 15.0, minimum=0.5),
        event_retention_days=_int(env, "EVENT_RETENTION_DAYS", 30, minimum=1),
        retention_days=_int(env, "RETENTION_DAYS", 90, minimum=0),
        retention_interval=_float(env, "RETENTION_INTERVAL", 3600.0, minimum=0.05),
        retention_chunk=_int(env, "RETENTION_CHUNK", 2000, minimum=10, maximum=100_000),
        session_days=_int(env, "SESSION_DAYS", 7, minimum=1),
        demo=_bool(env, "DEMO", False),
        secure_cookies=_bool(env, "SECURE_COOKIES", False),
        login_attempts=_int(env, "LOGIN_ATTEMPTS", 5, minimum=1),
        login_window=_float(env, "LOGIN_WINDOW", 300.0, minimum=1.0),
        rate_limit=_int(env, "RATE_LIMIT", 600, minimum=0, maximum=1_000_000),
        rate_burst=_int(env, "RATE_BURST", 120, minimum=1, maximum=1_000_000),
        metrics=_bool(env, "METRICS", True),
        metrics_token=_metrics_token(env),
        log_level=log_level,
        pipeline_timeout=_float(env, "PIPELINE_TIMEOUT", 3600.0, minimum=0.1),
        regression_window=_float(env, "REGRESSION_WINDOW", 1800.0, minimum=0.1),
        regression_rate=_rate(env, "REGRESSION_RATE", 0.10),
        regression_min_customers=_int(env, "REGRESSION_MIN_CUSTOMERS", 20, minimum=1),
        system_interval=_float(env, "SYSTEM_INTERVAL", 5.0, minimum=0.1),
        sim_env={k: v for k, v in env.items() if k.startswith(PREFIX + "SIM_")},
    )
