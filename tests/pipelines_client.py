"""Helpers of the pipeline and deployment tests: an agent's API client and what the database recorded."""

from __future__ import annotations

import time

from support import db_rows

JOBS = "/api/dashboard/jobs"
BUILD = {"job_type": "build", "repo": "acme/api", "agent_id": "ci-1"}


def agent(server, user, scope: str = "agent"):
    """An API client with a token of this scope, as a CI agent uses it."""
    return server.client(token=server.create_token(user, scope))


def report(api, body: dict | None = None, headers: dict | None = None) -> dict:
    """A new pipeline job (asserting 201), a millisecond after the one before: lists are newest first."""
    time.sleep(0.002)
    response = api.post(JOBS, json={**BUILD, **(body or {})}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["job"]


def patch(api, path: str, body) -> object:
    return api.http.patch(path, json=body)


def stored_jobs(server, user) -> int:
    return db_rows(server.settings.database_url, "SELECT COUNT(*) FROM pipeline_jobs WHERE user_id = $1",
                   user["id"])[0][0]


def events(server, user) -> list[tuple[str, str, str]]:
    """(topic, record id, kind) of the user's events, in id order."""
    return [tuple(r) for r in db_rows(server.settings.database_url,
                                      "SELECT topic, job_id, kind FROM job_events WHERE user_id = $1 "
                                      "ORDER BY event_id", user["id"])]
