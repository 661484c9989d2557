"""Settings from JOBMON_* variables: defaults, and wrong values that stop start-up naming the variable."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from server.config import ConfigError, load_settings
from support import ROOT, free_port


def test_defaults_give_the_embedded_set_up(tmp_path):
    data = tmp_path / "data"
    settings = load_settings({"JOBMON_DATA_DIR": str(data)})
    assert settings.database_url == f"sqlite:///{data / 'jobmon.db'}"
    assert settings.embedded_simulator and settings.redis_url == "" and not settings.demo
    assert (settings.upstream_timeout, settings.batch_size, settings.appstatus_ttl) == (30.0, 100, 1800)
    assert (settings.pipeline_timeout, settings.regression_window, settings.regression_rate,
            settings.regression_min_customers) == (3600.0, 1800.0, 0.10, 20)
    assert settings.catchup_interval == 3.0
    # a secret key is generated on first start, kept private, and the same on the next start
    key_file = data / "secret_key"
    assert len(settings.secret_key) >= 32 and key_file.read_text() == settings.secret_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_settings({"JOBMON_DATA_DIR": str(data)}).secret_key == settings.secret_key
    assert settings.secret_key not in repr(settings)


def test_values_are_parsed(tmp_path):
    clusters = tmp_path / "clusters.json"
    clusters.write_text("[]")
    settings = load_settings({
        "JOBMON_DATA_DIR": str(tmp_path), "JOBMON_DATABASE_URL": "postgres://u:pw@db.example/jobs",
        "JOBMON_REDIS_URL": "redis://cache:6379/2", "JOBMON_SECRET_KEY": "k" * 40,
        "JOBMON_CLUSTERS_FILE": str(clusters), "JOBMON_ALLOWED_ORIGINS": "https://a.example/, http://b.example",
        "JOBMON_UPSTREAM_TIMEOUT": "2.5", "JOBMON_BATCH_SIZE": "250", "JOBMON_DEMO": "yes",
        "JOBMON_LOG_LEVEL": "debug", "JOBMON_SIM_LATENCY_MS": "5", "JOBMON_CATCHUP_INTERVAL": "0",
    })
    assert settings.catchup_interval == 0.0
    assert settings.database_url == "postgresql://u:pw@db.example/jobs"
    assert settings.allowed_origins == ("https://a.example", "http://b.example")
    assert (settings.upstream_timeout, settings.batch_size, settings.demo, settings.log_level) == (2.5, 250, True,
                                                                                                 "DEBUG")
    assert not settings.embedded_simulator and settings.secret_key == "k" * 40
    assert settings.sim_env == {"JOBMON_SIM_LATENCY_MS": "5"}
    assert ":pw@" not in repr(settings) and "postgresql://u:***@db.example/jobs" in repr(settings)


@pytest.mark.parametrize("name, value, expected", [
    ("UPSTREAM_TIMEOUT", "soon", "expected a number of seconds"),
    ("UPSTREAM_TIMEOUT", "0", "expected a number >= 0.05"),
    ("UPSTREAM_TIMEOUT", "nan", "expected a number >= 0.05"),
    ("UPSTREAM_TIMEOUT", "inf", "expected a number >= 0.05"),
    ("DATABASE_CONNECT_TIMEOUT", "0", "expected a number >= 0.1"),
    ("DATABASE_CONNECT_TIMEOUT", "soon", "expected a number of seconds"),
    ("BATCH_SIZE", "0", "expected an integer between 1 and 1000"),
    ("BATCH_SIZE", "5000", "expected an integer between 1 and 1000"),
    ("BATCH_SIZE", "ten", "expected an integer"),
    ("BATCH_SIZE", "1.5", "expected an integer"),
    ("APPSTATUS_TTL", "-1", "expected an integer between 1"),
    ("MAX_CIDS", "0", "expected an integer >= 1"),
    ("DATABASE_URL", "mysql://root@db/jobs", "expected sqlite:///path or postgresql://user@host/db"),
    ("DATABASE_URL", "jobs.db", "expected sqlite:///path"),
    ("REDIS_URL", "http://cache:6379", "expected redis://host:port/db"),
    ("CLUSTERS_FILE", "/no/such/clusters.json", "no such file"),
    ("ALLOWED_ORIGINS", "jobs.example.com", "expected comma-separated origins"),
    ("SECRET_KEY", "changeme", "placeholder or shorter than 16 characters"),
    ("SECRET_KEY", "short", "placeholder or shorter than 16 characters"),
    ("DEMO", "maybe", "expected true or false"),
    ("LOG_LEVEL", "LOUD", "expected DEBUG, INFO, WARNING or ERROR"),
    ("LEASE_SECONDS", "0.1", "expected a number >= 0.5"),
    ("PIPELINE_TIMEOUT", "an hour", "expected a number of seconds"),
    ("PIPELINE_TIMEOUT", "0", "expected a number >= 0.1"),
    ("REGRESSION_WINDOW", "-5", "expected a number >= 0.1"),
    ("REGRESSION_RATE", "10%", "expected a fraction between 0 and 1"),
    ("REGRESSION_RATE", "1.5", "expected a fraction between 0 and 1"),
    ("REGRESSION_RATE", "nan", "expected a fraction between 0 and 1"),
    ("REGRESSION_MIN_CUSTOMERS", "0", "expected an integer >= 1"),
    ("CATCHUP_INTERVAL", "often", "expected a number of seconds"),
    ("CATCHUP_INTERVAL", "-1", "expected a number >= 0"),
    ("CATCHUP_INTERVAL", "0.01", "expected 0 (no periodic catch-up) or a number of seconds >= 0.1"),
])
def test_wrong_values_name_the_variable(tmp_path, name, value, expected):
    with pytest.raises(ConfigError) as caught:
        load_settings({"JOBMON_DATA_DIR": str(tmp_path), f"JOBMON_{name}": value})
    message = str(caught.value)
    assert message.startswith(f"JOBMON_{name}"), message
    assert expected in message, message


def test_an_unwritable_data_dir_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as caught:
        load_settings({"JOBMON_DATA_DIR": str(blocker / "data")})
    assert str(caught.value).startswith("JOBMON_DATA_DIR=") and "JOBMON_SECRET_KEY" in str(caught.value)


@pytest.mark.parametrize("entries, expected", [
    ("{not json", "cannot read it as JSON"),
    ("[]", "expected a non-empty JSON list of clusters"),
    (json.dumps({"id": "prod"}), "expected a non-empty JSON list of clusters"),
    (json.dumps(["prod"]), "entry 0 is not an object"),
    (json.dumps([{"id": "Prod!", "base_url": "https://tms"}]), "entry 0 needs an 'id' of lowercase letters"),
    (json.dumps([{"id": "prod", "base_url": "ftp://tms"}]), "cluster 'prod' needs a 'base_url' starting with"),
    (json.dumps([{"id": "prod"}]), "cluster 'prod' needs a 'base_url' starting with"),
])
def test_a_wrong_clusters_file_stops_the_app(tmp_path, entries, expected):
    from server.app import create_app

    path = tmp_path / "clusters.json"
    path.write_text(entries)
    settings = load_settings({"JOBMON_DATA_DIR": str(tmp_path), "JOBMON_CLUSTERS_FILE": str(path)})
    with pytest.raises(ConfigError) as caught:
        create_app(settings)
    assert str(caught.value).startswith(f"JOBMON_CLUSTERS_FILE={str(path)!r}: ")
    assert expected in str(caught.value)


def serve(tmp_path, **env) -> subprocess.CompletedProcess:
    """`python -m server serve` with these settings; it must stop before serving anything."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBMON_")}
    environ.update({"PYTHONPATH": str(ROOT), "JOBMON_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.run([sys.executable, "-m", "server", "serve", "--port", str(free_port())], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("env, expected", [
    ({"JOBMON_BATCH_SIZE": "0"}, "configuration error: JOBMON_BATCH_SIZE='0': expected an integer between 1 and 1000"),
    ({"JOBMON_CLUSTERS_FILE": "{clusters}"}, "configuration error: JOBMON_CLUSTERS_FILE='{clusters}': cannot read it"),
    ({"JOBMON_SIM_LATENCY_MS": "fast"},
     "configuration error: JOBMON_SIM_LATENCY_MS='fast' is invalid: expected a non-negative number"),
    # nothing listens on port 1; the password is not printed
    ({"JOBMON_DATABASE_URL": "postgresql://jobmon:s3cret-pw@127.0.0.1:1/jobmon"},
     "error: cannot open the database at JOBMON_DATABASE_URL=postgresql://jobmon:********@127.0.0.1:1/jobmon: "),
])
def test_serve_stops_with_exit_code_2_naming_the_variable(tmp_path, env, expected):
    clusters = tmp_path / "clusters.json"
    clusters.write_text("{not json")
    env = {key: value.format(clusters=clusters) for key, value in env.items()}
    result = serve(tmp_path, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected.format(clusters=clusters) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "Uvicorn running" not in result.stderr
    assert "s3cret-pw" not in result.stderr
