"""The command line: create-user (password from stdin) and create-token, used against a live server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support import ROOT, SubprocessServer


def cli(server, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`python -m server ARGS` on the live server's database."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBMON_")}
    environ.update({**server.env, "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, env=environ, input=stdin,
                          capture_output=True, text=True, timeout=60)


# the CLI's answers name the new users' ids: 1 on a database of their own
@pytest.mark.own_server
def test_create_user_and_token(server, sim):
    made = cli(server, "create-user", "carol", "--password-stdin", stdin="a long passphrase\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "created user carol (id 1)"
    assert "a long passphrase" not in made.stdout + made.stderr

    api = server.client()
    assert api.login("carol", "a long passphrase").status_code == 200
    assert api.get("/api/auth/me").json()["user"]["role"] == "user"

    issued = cli(server, "create-token", "carol", "--scope", "write", "--name", "deploy-bot")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("jm_") and "\n" not in token  # stdout is the token alone, for scripts
    assert "shown once" in issued.stderr and "deploy-bot" in issued.stderr
    bot = server.client(token=token)
    assert bot.get("/api/auth/me").json()["user"] == {"id": 1, "username": "carol", "role": "user",
                                                      "scope": "write", "via": "token"}
    job = bot.start(["C1"])
    assert bot.wait_for(job["job_id"])["status"] == "SUCCESS"
    assert [t["name"] for t in api.get("/api/tokens").json()["tokens"]] == ["deploy-bot"]


@pytest.mark.own_server
@pytest.mark.slow  # eight runs of the command line, each a Python process of its own
def test_cli_refusals(server):
    short = cli(server, "create-user", "dave", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and short.stderr.strip() == "error: A password has 8 to 1024 characters"
    bad_name = cli(server, "create-user", "no spaces", "--password-stdin", stdin="long enough pw\n")
    assert bad_name.returncode == 1 and "username" in bad_name.stderr
    admin = cli(server, "create-user", "erin", "--admin", "--password-stdin", stdin="long enough pw\n")
    assert admin.returncode == 0 and admin.stdout.strip() == "created admin erin (id 1)"
    again = cli(server, "create-user", "erin", "--password-stdin", stdin="long enough pw\n")
    assert again.returncode == 1 and again.stderr.strip() == "error: User 'erin' already exists"

    unknown = cli(server, "create-token", "zed", "--scope", "read")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no user 'zed'" and unknown.stdout == ""
    bad_scope = cli(server, "create-token", "erin", "--scope", "root")
    assert bad_scope.returncode == 2 and "invalid choice: 'root'" in bad_scope.stderr
    server.create_user("frank")
    not_admin = cli(server, "create-token", "frank", "--scope", "admin")
    assert not_admin.returncode == 1 and not_admin.stderr.strip() == "error: Only admins can create admin tokens"
    admin_token = cli(server, "create-token", "erin", "--scope", "admin").stdout.strip()
    assert server.client(token=admin_token).get("/api/auth/me").json()["user"]["scope"] == "admin"



@pytest.mark.slow
@pytest.mark.parametrize("level, shown", [("WARNING", False), ("INFO", True)])
def test_log_level_sets_the_applications_own_loggers(tmp_path, level, shown):
    server = SubprocessServer({"JOBMON_DATA_DIR": str(tmp_path), "JOBMON_LOG_LEVEL": level,
                               "JOBMON_DATABASE_URL": f"sqlite:///{tmp_path}/jobmon.db"}).start()
    try:
        # logged by server.db.migrations while the fresh database is created
        assert ("INFO server.db.migrations: created database schema" in server.output()) is shown, server.output()
    finally:
        server.stop()
