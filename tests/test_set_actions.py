"""Starting Set Actions: JSON, typed text and CSV input, idempotency, and every bad input."""

from __future__ import annotations

import threading

import httpx
import pytest

from support import api_error as error
from support import http_client


def body(cids, action="PE-Enable", cluster="sim", **extra) -> dict:
    return {"cluster": cluster, "action": action, "cids": cids, **extra}


def customers(api, job_id: str) -> list[str]:
    return [c["cid"] for c in api.get(f"/api/jobs/{job_id}/customers").json()["customers"]]


def upload(api, data: bytes, action="Trans-Begin", cluster="sim", **kwargs) -> httpx.Response:
    return api.post("/api/set-actions", data={"cluster": cluster, "action": action},
                    files={"file": ("cids.csv", data, "text/csv")}, **kwargs)


def test_clusters_and_actions_are_listed(server, alice):
    api = server.client(alice)
    listed = api.get("/api/clusters").json()
    assert listed["clusters"] == [{"id": "sim", "name": "Cluster sim"}, {"id": "sim2", "name": "Cluster sim2"}]
    assert [(a["name"], a["code"]) for a in listed["actions"]] == [
        ("Trans-Begin", 1), ("PE-Enable", 2), ("T-Enable", 3), ("PE-Finalize", 4), ("PE-Direct", 5)]
    assert "base_url" not in api.get("/api/clusters").text  # clients never see upstream URLs
    assert error(server.client().get("/api/clusters"), 401)


def test_json_and_typed_cids(server, alice, sim):
    api = server.client(alice)
    response = api.post("/api/set-actions", json=body([" C1", "C2 ", "C1", "c1", "x:y.z_w-1"]))
    assert response.status_code == 202
    answer = response.json()
    assert answer["idempotent_replay"] is False
    job = answer["job"]
    # trimmed and de-duplicated in order; CIDs are case-sensitive
    assert job["customer_count"] == 4
    assert customers(api, job["job_id"]) == ["C1", "C2", "c1", "x:y.z_w-1"]
    assert job["action_name"] == "PE-Enable" and job["action_code"] == 2 and job["cluster"] == "sim"
    assert job["status"] == "QUEUED" and job["batch_id"] is None and job["parent_job_id"] is None

    typed = api.start("C10, C11\nC12;C13\tC14\r\n\n C15 ,,")
    assert customers(api, typed["job_id"]) == ["C10", "C11", "C12", "C13", "C14", "C15"]
    api.wait_for(typed["job_id"])
    assert sim.stats()["customers_applied"] >= 6


@pytest.mark.parametrize("given, name, code", [
    ("tran-begin", "Trans-Begin", 1), ("TRANS-BEGIN", "Trans-Begin", 1), ("Trans-Begin", "Trans-Begin", 1),
    (" pe-finalize ", "PE-Finalize", 4), ("t-ENABLE", "T-Enable", 3), ("PE-Direct", "PE-Direct", 5),
    (2, "PE-Enable", 2),
])
def test_action_aliases(server, alice, sim, given, name, code):
    api = server.client(alice)
    job = api.start(["C1"], action=given)
    assert (job["action_name"], job["action_code"]) == (name, code), given
    assert [j["job_id"] for j in api.get("/api/jobs/mine").json()["jobs"]] == [job["job_id"]]


@pytest.mark.parametrize("bad", ["Trans Begin", "trans_begin", "", "DROP TABLE jobs", None, 9, True, ["PE-Enable"],
                                 "x" * 500])
def test_unknown_actions_are_refused_listing_the_valid_ones(server, alice, bad):
    api = server.client(alice)
    answer = error(api.post("/api/set-actions", json=body(["C1"], action=bad)), 400)
    assert answer["code"] == "unknown_action"
    assert answer["details"]["valid_actions"] == ["Trans-Begin", "PE-Enable", "T-Enable", "PE-Finalize", "PE-Direct"]
    assert "Valid actions: Trans-Begin, PE-Enable, T-Enable, PE-Finalize, PE-Direct" in answer["message"]
    assert "x" * 100 not in answer["message"]
    # nothing was stored for the refused request
    assert api.get("/api/jobs/mine").json()["jobs"] == []


def test_a_set_action_without_an_action_is_refused(server, alice):
    api = server.client(alice)
    assert error(api.post("/api/set-actions", json={"cluster": "sim", "cids": ["C1"]}), 400)["code"] == "unknown_action"
    assert api.get("/api/jobs/mine").json()["jobs"] == []


@pytest.mark.parametrize("cluster", ["prod", "", None, 7, "../sim", "http://127.0.0.1:1/", "SIM"])
def test_unknown_clusters_are_refused_listing_the_known_ones(server, alice, cluster):
    api = server.client(alice)
    answer = error(api.post("/api/set-actions", json=body(["C1"], cluster=cluster)), 400)
    assert answer["code"] == "unknown_cluster"
    assert answer["details"] == {"valid_clusters": ["sim", "sim2"]}
    assert "Known clusters: sim, sim2" in answer["message"]
    assert api.get("/api/jobs/mine").json()["jobs"] == []


@pytest.mark.parametrize("cids, shown", [
    (["C1", "bad cid"], "'bad cid'"), (["C1", "-C2"], "'-C2'"), (["C" * 65], None), ([""], "''"),
    (["C1", 5], "'5'"), ([None], "'None'"), (["C1", "C2<script>"], "C2<script>"), (["é1"], "'é1'"),
])
def test_an_invalid_cid_is_refused_and_shown(server, alice, cids, shown):
    api = server.client(alice)
    answer = error(api.post("/api/set-actions", json=body(cids)), 400)
    assert answer["code"] == "validation_error" and answer["details"]["field"] == "cids", cids
    assert "invalid customer ID" in answer["message"]
    if shown:
        assert shown in answer["message"], answer["message"]
    assert api.get("/api/jobs/mine").json()["jobs"] == []


@pytest.mark.parametrize("token", [5, "has space", "x" * 5000, "tok\n"])
def test_a_malformed_upstream_token_is_refused(server, alice, token):
    api = server.client(alice)
    assert error(api.post("/api/set-actions", json=body(["C1"], upstream_token=token)),
                 400)["details"] == {"field": "upstream_token"}
    assert api.get("/api/jobs/mine").json()["jobs"] == []


def test_missing_or_wrong_kinds_of_cids(server, alice):
    api = server.client(alice)
    assert error(api.post("/api/set-actions", json=body([])), 400)["message"] == "No customer IDs given"
    assert error(api.post("/api/set-actions", json=body("  ,, \n")), 400)["message"] == "No customer IDs given"
    assert error(api.post("/api/set-actions", json=body({"C1": 1})), 400)["details"] == {"field": "cids"}
    assert error(api.post("/api/set-actions", json=body(12)), 400)["details"] == {"field": "cids"}
    assert error(api.post("/api/set-actions", json={"cluster": "sim", "action": "PE-Enable"}),
                 400)["details"] == {"field": "cids"}
    assert api.get("/api/jobs/mine").json()["jobs"] == []


def test_bodies_that_are_not_a_set_action(server, alice):
    api = server.client(alice)
    assert error(api.post("/api/set-actions"), 400)
    assert error(api.post("/api/set-actions", content=b"cids=C1", headers={"content-type": "text/plain"}), 400)
    assert error(api.post("/api/set-actions", content=b"{", headers={"content-type": "application/json"}),
                 400)["message"] == "The request body is not valid JSON"
    assert error(api.post("/api/set-actions", content=b"\x00\xff\xfe", headers={"content-type": "application/json"}),
                 400)
    assert error(api.post("/api/set-actions", json=[body(["C1"])]), 400)["message"] == \
        "Expected a JSON object in the request body"
    assert error(api.post("/api/set-actions", json="C1"), 400)
    assert error(api.post("/api/set-actions", content=b"--x\r\nbroken",
                          headers={"content-type": "multipart/form-data; boundary=x"}), 400)
    assert error(api.post("/api/set-actions", data={"cluster": "sim", "action": "PE-Enable"},
                          files={"other": ("a.csv", b"C1", "text/csv")}), 400)["details"] == {"field": "file"}
    assert error(server.client().post("/api/set-actions", json=body(["C1"])), 401)
    assert api.get("/api/jobs/mine").json()["jobs"] == []


def test_size_and_count_limits(make_server):
    server = make_server(MAX_CIDS=10, MAX_UPLOAD_BYTES=2048)
    alice = server.create_user("alice")
    api = server.client(alice)
    too_many = error(api.post("/api/set-actions", json=body([f"C{i}" for i in range(11)])), 413)
    assert too_many["code"] == "payload_too_large" and too_many["details"] == {"field": "cids", "max": 10}
    assert "at most 10" in too_many["message"]
    assert error(api.post("/api/set-actions", json=body(" ".join(f"C{i}" for i in range(11)))), 413)
    assert "11 given" in too_many["message"]
    assert api.start([f"C{i}" for i in range(10)])["customer_count"] == 10
    csv_rows = "\n".join(f"C{i}" for i in range(11)).encode()
    assert error(upload(api, csv_rows), 413)["details"]["max"] == 10

    big_csv = b"cid\n" + b"\n".join(b"C%05d" % i for i in range(600))  # > 2048 bytes
    assert error(upload(api, big_csv), 413)["code"] == "payload_too_large"
    huge_json = body(["C1"], padding="x" * 5000)
    assert error(api.post("/api/set-actions", json=huge_json), 413)["details"] == {"max_bytes": 2048}

    # a body far past every limit, sent without Content-Length, is cut off too
    def chunks():
        for _ in range(200):
            yield b"[" * 10_000

    assert error(api.post("/api/set-actions", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert len(api.get("/api/jobs/mine").json()["jobs"]) == 1


def test_csv_upload(server, alice, sim):
    api = server.client(alice)
    # a header naming the CID column, a BOM, CRLF line ends, blank lines and a quoted cell
    data = '\ufeffname,Customer_ID\r\nfirst,C1\r\n\r\nsecond," C2 "\r\nthird,C1\r\n'.encode()
    response = upload(api, data)
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    assert customers(api, job["job_id"]) == ["C1", "C2"]
    assert job["action_name"] == "Trans-Begin" and len(job["batch_id"]) == 36
    # without a recognised header: the first column
    headless = upload(api, b"C7,ignored\nC8\nC9,,\n").json()["job"]
    assert customers(api, headless["job_id"]) == ["C7", "C8", "C9"]
    assert headless["batch_id"] != job["batch_id"]
    # typed CIDs in a multipart form (no file)
    typed = api.post("/api/set-actions", data={"cluster": "sim", "action": "pe-enable", "cids": "C4 C5"})
    assert customers(api, typed.json()["job"]["job_id"]) == ["C4", "C5"]

    assert error(upload(api, "C1\nC2\n".encode("utf-16")), 400)["message"] == "The CSV file is not UTF-8 text"
    assert error(upload(api, b""), 400)["message"] == "The CSV file has no customer IDs"
    assert error(upload(api, b"cid\n\n ,\n"), 400)
    bad = error(upload(api, b"cid\nC1\nnot valid\n"), 400)
    assert bad["details"]["invalid"] == ["not valid"]
    assert error(upload(api, b"C1", action="nope"), 400)["code"] == "unknown_action"
    assert error(upload(api, b"C1", cluster="nope"), 400)["code"] == "unknown_cluster"
    api.wait_for(job["job_id"])


@pytest.mark.parametrize("header", ["CID", "cid", "customer id", "Customer", "Account", "account_id", "ID"])
def test_csv_cid_column_headers(server, alice, sim, header):
    api = server.client(alice)
    answer = upload(api, f"{header}\nC3\n".encode()).json()["job"]
    assert customers(api, answer["job_id"]) == ["C3"], header


def test_idempotency_key(server, alice, bob, sim):
    api = server.client(alice)
    first = api.post("/api/set-actions", json=body(["C1", "C2"]), headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202 and first.json()["idempotent_replay"] is False
    job = first.json()["job"]
    assert job["idempotency_key"] == "order-42"
    again = api.post("/api/set-actions", json=body(["C1", "C2"]), headers={"Idempotency-Key": "order-42"})
    assert again.status_code == 202 and again.json()["idempotent_replay"] is True
    assert again.json()["job"]["job_id"] == job["job_id"]
    # even a different body: the key names the request, and a retried request must not run twice
    other = api.post("/api/set-actions", json=body(["C9"], action="PE-Direct"), headers={"Idempotency-Key": "order-42"})
    assert other.json()["job"]["job_id"] == job["job_id"]
    # a CSV upload is replayed the same way
    csv_first = upload(api, b"C5\n", headers={"Idempotency-Key": "upload-1"}).json()["job"]
    assert upload(api, b"C5\n", headers={"Idempotency-Key": "upload-1"}).json()["job"]["job_id"] == csv_first["job_id"]
    # keys belong to their user
    bob_api = server.client(bob)
    bob_job = bob_api.start(["C1"], headers={"Idempotency-Key": "order-42"})
    assert bob_job["job_id"] != job["job_id"]
    bob_api.wait_for(bob_job["job_id"])
    assert len(api.get("/api/jobs/mine").json()["jobs"]) == 2
    done = api.wait_for(job["job_id"])
    assert done["status"] == "SUCCESS"
    api.wait_for(csv_first["job_id"])
    assert sim.stats()["customers_applied"] == 4  # alice's C1, C2, C5 and bob's C1, each once


@pytest.mark.parametrize("key", ["x" * 201, "tab\tkey", "clé", ""])
def test_a_malformed_idempotency_key_is_refused(server, alice, key):
    api = server.client(alice)
    answer = error(api.post("/api/set-actions", json=body(["C1"]), headers={"Idempotency-Key": key.encode()}), 400)
    if key:
        assert answer["details"] == {"field": "Idempotency-Key"}
    assert api.get("/api/jobs/mine").json()["jobs"] == []


def test_concurrent_requests_with_one_key_make_one_job(server, alice, sim):
    token = server.create_token(alice, "write")
    barrier = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def post() -> None:
        with http_client(base_url=server.url, timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "same"}) as http:
            barrier.wait()
            answers.append(http.post("/api/set-actions", json=body([f"C{i}" for i in range(300)])))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers]
    assert len({a.json()["job"]["job_id"] for a in answers}) == 1
    assert sorted(a.json()["idempotent_replay"] for a in answers) == [False] + [True] * 7
    api = server.client(token=token)
    assert len(api.get("/api/jobs/mine").json()["jobs"]) == 1
    api.wait_for(answers[0].json()["job"]["job_id"])
    assert sim.stats()["customers_applied"] == 300
