"""Login, sessions, CSRF, the login rate limit and API tokens, through the HTTP API."""

from __future__ import annotations

import pytest

from support import Api, unique
from support import api_error as error

CIDS = {"cluster": "sim", "action": "PE-Enable", "cids": ["C1"]}


def test_login_me_logout(server, alice):
    api = Api(server.url)
    try:
        assert error(api.get("/api/auth/me"), 401)["code"] == "unauthorized"
        response = api.login(alice["username"], alice["password"])
        assert response.status_code == 200
        body = response.json()
        assert body["user"] == {"id": alice["id"], "username": alice["username"], "role": "user"}
        assert len(body["csrf_token"]) >= 32
        cookie = response.headers["set-cookie"].lower()
        assert "jobmon_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
        assert "correct-horse" not in response.text

        me = api.get("/api/auth/me").json()
        assert me["user"] == {"id": alice["id"], "username": alice["username"], "role": "user", "scope": "write",
                              "via": "cookie"}
        assert me["csrf_token"] == body["csrf_token"]  # a reloaded page gets it back

        # logout is a write: without the CSRF token a cross-site form could log the user out
        session_cookie = api.http.cookies["jobmon_session"]
        assert error(api.post("/api/auth/logout", headers={"X-CSRF-Token": ""}), 403)["code"] == "csrf_failed"
        assert api.post("/api/auth/logout").json() == {"ok": True}
        assert error(api.get("/api/auth/me"), 401)["code"] == "unauthorized"
        # the old cookie, replayed, is dead on the server too
        replay = server.client()
        replay.http.cookies.set("jobmon_session", session_cookie)
        assert error(replay.get("/api/auth/me"), 401)["code"] == "session_expired"
    finally:
        api.close()


def test_wrong_credentials_and_bad_login_bodies(server, alice):
    api = server.client()
    wrong = error(api.post("/api/auth/login", json={"username": alice["username"], "password": "nope-nope"}), 401)
    unknown = error(api.post("/api/auth/login", json={"username": unique("nobody"), "password": "nope-nope"}), 401)
    # the same answer either way: a login form must not reveal which usernames exist
    assert wrong == unknown
    assert wrong["code"] == "invalid_credentials"
    assert "jobmon_session" not in api.http.cookies
    assert error(api.post("/api/auth/login", json={"username": "alice"}), 400)["details"] == {"field": "password"}
    assert error(api.post("/api/auth/login", json={"password": "x"}), 400)["details"] == {"field": "username"}
    assert error(api.post("/api/auth/login", json={"username": ["alice"], "password": "x"}), 400)
    assert error(api.post("/api/auth/login", content=b"{not json", headers={"content-type": "application/json"}),
                 400)["message"] == "The request body is not valid JSON"
    assert error(api.post("/api/auth/login", json=["alice", "pw"]), 400)
    assert error(api.post("/api/auth/login", content=b""), 400)
    assert error(api.post("/api/auth/login", content=b"\xff\xfe\x00garbage"), 400)
    huge = b'{"username": "alice", "password": "' + b"x" * 100_000 + b'"}'
    assert error(api.post("/api/auth/login", content=huge), 413)["code"] == "payload_too_large"
    assert error(api.get("/api/auth/login"), 405)


def test_login_rate_limit(make_server):
    server = make_server(LOGIN_ATTEMPTS=3, LOGIN_WINDOW=60)
    alice = server.create_user("alice")
    server.create_user("bob")
    api = server.client()
    for _ in range(3):
        assert error(api.post("/api/auth/login", json={"username": "alice", "password": "guess-guess"}),
                     401)["code"] == "invalid_credentials"
    limited = api.post("/api/auth/login", json={"username": "alice", "password": alice["password"]})
    assert error(limited, 429)["code"] == "rate_limited"
    assert limited.headers["Retry-After"] == "60"
    assert "alice" in limited.json()["error"]["message"]
    # another account is not locked by alice's attacker
    assert api.post("/api/auth/login", json={"username": "bob", "password": "correct-horse"}).status_code == 200


def test_csrf_protects_cookie_writes_only(server, alice, sim):
    api = server.client(alice)
    bare = server.client()
    bare.http.cookies.set("jobmon_session", api.http.cookies["jobmon_session"])
    missing = bare.post("/api/set-actions", json=CIDS)
    assert error(missing, 403)["code"] == "csrf_failed"
    assert "X-CSRF-Token" in missing.json()["error"]["message"]
    assert error(bare.post("/api/set-actions", json=CIDS, headers={"X-CSRF-Token": "forged"}), 403)["code"] \
        == "csrf_failed"
    assert error(bare.post("/api/tokens", json={"name": "x"}), 403)["code"] == "csrf_failed"
    # reads need no CSRF token
    assert bare.get("/api/jobs/mine").status_code == 200
    assert api.post("/api/set-actions", json=CIDS).status_code == 202
    # a bearer token needs none: a browser never attaches it by itself
    token = server.create_token(alice, "write")
    assert server.client(token=token).post("/api/set-actions", json=CIDS).status_code == 202
    # the CSRF token of alice's session does not unlock a tampered cookie
    bare.http.cookies.set("jobmon_session", api.http.cookies["jobmon_session"] + "x")
    assert error(bare.get("/api/auth/me"), 401)["code"] == "session_expired"


def test_tokens_create_list_revoke(server, alice, bob):
    api = server.client(alice)
    created = api.post("/api/tokens", json={"name": " wallboard ", "scope": "read"})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token["name"] == "wallboard" and token["scope"] == "read"
    assert token["token"].startswith("jm_") and token["prefix"] == token["token"][:8]
    assert token["created_at"].endswith("Z")

    listed = api.get("/api/tokens").json()["tokens"]
    assert [t["id"] for t in listed] == [token["id"]]
    assert "token" not in listed[0] and token["token"] not in api.get("/api/tokens").text  # shown once
    assert listed[0]["revoked_at"] is None

    reader = server.client(token=token["token"])
    assert reader.get("/api/auth/me").json()["user"] == {
        "id": alice["id"], "username": alice["username"], "role": "user", "scope": "read", "via": "token"}
    assert reader.get("/api/auth/me").json()["csrf_token"] is None

    # bob can neither see nor revoke alice's token
    bob_api = server.client(bob)
    assert bob_api.get("/api/tokens").json()["tokens"] == []
    assert error(bob_api.delete(f"/api/tokens/{token['id']}"), 404)["code"] == "not_found"
    assert reader.get("/api/auth/me").status_code == 200

    assert error(api.delete("/api/tokens/abc"), 400)["details"] == {"field": "token_id"}
    assert error(api.delete("/api/tokens/99999999999999999999999"), 400)
    assert error(api.delete("/api/tokens/424242"), 404)
    revoked = api.delete(f"/api/tokens/{token['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked"]["id"] == token["id"]
    assert error(reader.get("/api/auth/me"), 401)["code"] == "invalid_token"
    assert error(api.delete(f"/api/tokens/{token['id']}"), 404)  # already revoked
    assert api.get("/api/tokens").json()["tokens"][0]["revoked_at"].endswith("Z")


def test_token_input_is_validated(server, alice):
    api = server.client(alice)
    assert error(api.post("/api/tokens", json={"name": "x", "scope": "root"}), 400)["details"] == {"field": "scope"}
    assert error(api.post("/api/tokens", json={"name": "", "scope": "read"}), 400)["details"] == {"field": "name"}
    assert error(api.post("/api/tokens", json={"name": "n" * 101, "scope": "read"}), 400)
    assert error(api.post("/api/tokens", json={"name": 5, "scope": "read"}), 400)
    assert error(api.post("/api/tokens", json={"name": "x", "scope": ["read"]}), 400)
    assert error(api.post("/api/tokens", content=b"nope", headers={"content-type": "application/json"}), 400)
    assert error(api.post("/api/tokens", content=b"[" * 100_000), 413)
    assert api.get("/api/tokens").json()["tokens"] == []


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Token jm_abc", "jm_abc", "Bearer jm_" + "x" * 300,
                                    "Bearer not-a-token"])
def test_a_malformed_authorization_header_is_401(server, header):
    answer = server.client().get("/api/auth/me", headers={"Authorization": header})
    assert answer.status_code == 401, header


def test_scopes(server, alice, admin, sim):
    alice_api = server.client(alice)
    read = server.client(token=server.create_token(alice, "read"))
    write = server.client(token=server.create_token(alice, "write"))

    denied = read.post("/api/set-actions", json=CIDS)
    assert error(denied, 403)["code"] == "insufficient_scope"
    assert "'write'" in denied.json()["error"]["message"]
    assert error(read.post("/api/tokens", json={"name": "x", "scope": "read"}), 403)["code"] == "insufficient_scope"
    assert read.get("/api/jobs/mine").status_code == 200

    job = write.start(["C1"])
    assert error(read.post(f"/api/jobs/{job['job_id']}/cancel"), 403)["code"] == "insufficient_scope"
    assert error(read.post(f"/api/jobs/{job['job_id']}/retry"), 403)["code"] == "insufficient_scope"
    # a write token may mint a read token, never a wider one
    assert write.post("/api/tokens", json={"name": "r", "scope": "read"}).status_code == 201
    assert error(write.post("/api/tokens", json={"name": "a", "scope": "admin"}), 400)["details"] == {
        "field": "scope"}
    # a non-admin cannot create an admin token at all
    no_admin = alice_api.post("/api/tokens", json={"name": "a", "scope": "admin"})
    assert error(no_admin, 400)["details"] == {"field": "scope"}

    admin_api = server.client(admin)
    admin_token = admin_api.post("/api/tokens", json={"name": "ops", "scope": "admin"}).json()["token"]
    assert admin_token["scope"] == "admin"
    ops = server.client(token=admin_token["token"])
    assert ops.get("/api/auth/me").json()["user"]["scope"] == "admin"
    assert ops.get(f"/api/jobs/{job['job_id']}").status_code == 200
    # an admin's read token reads only what a reader may: not other users' jobs
    admin_read = server.client(token=server.create_token(admin, "read"))
    assert error(admin_read.get(f"/api/jobs/{job['job_id']}"), 403)["code"] == "forbidden"
    # admins list and revoke anyone's tokens (on the shared server: this test's users' among them)
    everyone = admin_api.get("/api/tokens", params={"all": "true"}).json()["tokens"]
    assert {t["user_id"] for t in everyone if t["user_id"] in (alice["id"], admin["id"])} == {alice["id"], admin["id"]}
    alice_token = next(t for t in everyone if t["user_id"] == alice["id"] and t["scope"] == "write")
    assert admin_api.delete(f"/api/tokens/{alice_token['id']}").status_code == 200
    assert error(write.get("/api/jobs/mine"), 401)["code"] == "invalid_token"
    assert alice_api.get("/api/tokens", params={"all": "true"}).json()["tokens"][0]["user_id"] == alice["id"]
