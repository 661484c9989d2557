def test_a_set_action_runs_to_success(server, alice, sim):
    api = server.client(alice)
    job = api.start(["C1", "C2", "C3"])
    assert job["status"] == "QUEUED"
    done = api.wait_for(job["job_id"])
    assert done["status"] == "SUCCESS"
    assert done["done"] == 3 and done["failed"] == 0
    assert sim.stats()["customers_applied"] == 3
