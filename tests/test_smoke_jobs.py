def test_a_set_action_runs_to_success(server, alice, sim):
    api = server.client(alice)
    job = api.start(["C1", "C2", "C3"])
    assert job["status"] == "QUEUED"
    done = api.wait_for(job["job_id"])
    assert done["status"] == "SUCCESS"
    assert done["done"] == 3 and done["failed"] == 0
    assert sim.stats()["customers_applied"] == 3


def test_calls_in_flight_are_bounded_per_job_and_per_node(make_server, sim):
    # 3 batches of a job at once; 2 such jobs would want 6, but the node keeps 4 calls open at most
    server = make_server(BATCH_SIZE=1, BATCH_CONCURRENCY=3, UPSTREAM_CONNECTIONS=4)
    api = server.client(server.create_user("rita"))
    sim.knobs(latency_ms=60)  # long enough for the calls of a job (and of two jobs) to overlap
    job = api.wait_for(api.start([f"A{i:02d}" for i in range(12)])["job_id"])
    assert (job["status"], job["done"]) == ("SUCCESS", 12)
    assert sim.stats()["set_action_max_in_flight"] == 3

    jobs = [api.start([f"{prefix}{i:02d}" for i in range(12)]) for prefix in ("B", "D")]
    assert [api.wait_for(j["job_id"])["status"] for j in jobs] == ["SUCCESS", "SUCCESS"]
    assert sim.stats()["set_action_max_in_flight"] == 4
    assert sim.stats()["set_action_calls"] == 36 and sim.stats()["duplicate_batches"] == 0
