"""Write units (server/db/units.py): on SQLite, every unit queued meanwhile commits in one
transaction (a savepoint each); on PostgreSQL, one transaction per unit. Each caller gets its own
result or error, and what follows a unit's commit (`then`) happens after the commit only."""

from __future__ import annotations

import asyncio
import functools

import pytest
import pytest_asyncio

from server.db import INTEGRITY_ERRORS, Db
from support import BACKENDS, fresh_db


async def create_tables(database: Db) -> None:
    """What insert_unit writes to: t, and the one row of total."""
    await database.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    await database.execute("CREATE TABLE total (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    await database.execute("INSERT INTO total (id, n) VALUES (1, 0)")


@pytest_asyncio.fixture(params=BACKENDS)
async def db(request, tmp_path):
    async with fresh_db(request.param, tmp_path) as database:
        await create_tables(database)
        yield database


@pytest_asyncio.fixture
async def sqlite_db(tmp_path):
    """The same tables on SQLite alone, for the SQLite batcher and checkpointer."""
    async with fresh_db("sqlite", tmp_path) as database:
        await create_tables(database)
        yield database


def sqlite_path(db: Db) -> str:
    return db.url.removeprefix("sqlite:///")


def insert_unit(k: int, v: str):
    """Insert a row and add one to the total; returns (k, the total after it)."""
    yield ("INSERT INTO t (k, v) VALUES (:k, :v)", {"k": k, "v": v})
    (n,), = yield ("UPDATE total SET n = n + 1 WHERE id = 1 RETURNING n", {})
    return k, n


async def rows(db: Db) -> list[tuple]:
    return [tuple(row) for row in await db.raw_fetch("SELECT k, v FROM t ORDER BY k")]


def given(as_recipe: bool, unit_fn, *args):
    """A unit as callers hand it over: made (a generator), or as its recipe (it can be made again)."""
    return functools.partial(unit_fn, *args) if as_recipe else unit_fn(*args)


@pytest.mark.asyncio
@pytest.mark.parametrize("as_recipe", [False, True], ids=["units", "recipes"])
async def test_concurrent_units_commit_together_each_with_its_own_result(db, as_recipe):
    before = db.batcher.batches if db.batcher else 0
    results = await asyncio.gather(*(db.run_unit(given(as_recipe, insert_unit, k, f"v{k}")) for k in range(100)))
    assert [k for k, _ in results] == list(range(100))
    # each unit saw the ones before it in the same transaction: the totals are 1..100, once each
    assert sorted(n for _, n in results) == list(range(1, 101))
    assert await rows(db) == [(k, f"v{k}") for k in range(100)]
    if db.is_sqlite:
        assert db.batcher.batches - before == 1  # queued in one loop turn: one transaction


@pytest.mark.asyncio
@pytest.mark.parametrize("as_recipe", [False, True], ids=["units", "recipes"])
async def test_a_failing_unit_rolls_back_alone(db, as_recipe):
    """Units in savepoints; recipes first without, then (one failed) again from new units, each
    in its savepoint: either way the others commit and the failed ones leave nothing."""
    await db.run_unit(insert_unit(5, "first"))

    def failing_after_a_write():
        yield ("UPDATE total SET n = n + 100 WHERE id = 1 RETURNING n", {})
        raise ValueError("a domain error")

    again = db.batcher.batches_again if db.batcher else 0
    units = [given(as_recipe, insert_unit, 1, "a"), given(as_recipe, insert_unit, 5, "again"),
             given(as_recipe, failing_after_a_write), given(as_recipe, insert_unit, 7, "b")]
    outcomes = await asyncio.gather(*(db.run_unit(unit) for unit in units), return_exceptions=True)
    assert outcomes[0][0] == 1 and outcomes[3][0] == 7
    assert isinstance(outcomes[1], INTEGRITY_ERRORS)  # the repeated key
    assert isinstance(outcomes[2], ValueError)
    assert await rows(db) == [(1, "a"), (5, "first"), (7, "b")]
    # the failed units' writes are gone (the +100 and the repeated key's +1)
    assert (await db.raw_fetch("SELECT n FROM total"))[0][0] == 3
    if db.is_sqlite:
        assert db.batcher.batches_again - again == (1 if as_recipe else 0)


@pytest.mark.asyncio
async def test_a_cancelled_caller_does_not_break_the_batch(db):
    followed: list = []

    async def then(result):
        followed.append(result)

    tasks = [asyncio.create_task(db.run_unit(insert_unit(k, "x"), then=then)) for k in range(10)]
    await asyncio.sleep(0)  # every unit is submitted
    tasks[3].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    assert [r[0] for i, r in enumerate(done) if i != 3] == [k for k in range(10) if k != 3]
    for _ in range(50):  # the cancelled caller's `then` runs in the background
        if len(followed) == 10:
            break
        await asyncio.sleep(0.01)
    assert sorted(k for k, _ in followed) == list(range(10))
    assert [k for k, _ in await rows(db)] == list(range(10))  # its unit committed too
    # and the next units run as usual
    assert (await db.run_unit(insert_unit(10, "y")))[0] == 10


@pytest.mark.asyncio
async def test_results_and_then_come_after_the_commit(db):
    seen: list = []

    async def then(result):
        k, _ = result
        # another connection sees the row: it is committed
        if db.is_sqlite:
            seen.append(db._point_reader.execute("SELECT v FROM t WHERE k = :k", {"k": k}).fetchall())
        else:
            seen.append(await asyncio.create_task(db.raw_fetch("SELECT v FROM t WHERE k = :k", {"k": k})))

    results = await asyncio.gather(*(db.run_unit(insert_unit(k, f"v{k}"), then=then) for k in range(20)))
    assert len(results) == 20
    assert sorted(tuple(r[0]) for r in seen) == sorted((f"v{k}",) for k in range(20))


@pytest.mark.asyncio
async def test_a_failed_commit_fails_every_unit_of_its_batch(tmp_path):
    """SQLite only: a batch shares one transaction."""
    db = Db(f"sqlite:///{tmp_path / 'fk.db'}")
    await db.connect()
    try:
        await db.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
        await db.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, "
                         "p INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)")

        def child(i: int, parent: int):
            yield ("INSERT INTO c (id, p) VALUES (:i, :p)", {"i": i, "p": parent})
            return i

        # a deferred foreign key is checked at COMMIT: the whole transaction fails
        outcomes = await asyncio.gather(db.run_unit(child(1, 1)), db.run_unit(child(2, 99)),
                                        return_exceptions=True)
        assert all(isinstance(o, INTEGRITY_ERRORS) for o in outcomes)
        assert await db.raw_fetch("SELECT id FROM c") == []
        await db.execute("INSERT INTO p (id) VALUES (1)")
        assert await db.run_unit(child(3, 1)) == 3  # the batcher goes on
    finally:
        await db.disconnect()


@pytest.mark.asyncio
async def test_run_unit_inside_a_transaction_is_refused_and_run_inline_joins_it(sqlite_db):
    db = sqlite_db
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await db.run_unit(insert_unit(1, "a"))
    async with db.transaction():
        assert await db.run_inline(insert_unit(2, "b")) == (2, 1)
    assert await rows(db) == [(2, "b")]


@pytest.mark.asyncio
async def test_sqlite_batches_wait_off_the_loop_while_another_process_writes(sqlite_db):
    """A batch runs on the loop's thread only when the write lock is free at once; while another
    connection (another process) holds it, the batch waits on the connection's thread."""
    import sqlite3

    db, path = sqlite_db, sqlite_path(sqlite_db)
    assert await db.run_unit(insert_unit(1, "a")) == (1, 1)
    on_loop = db.batcher.on_loop_batches
    assert on_loop >= 1
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    pending = asyncio.ensure_future(db.run_unit(insert_unit(2, "b")))
    ticks = 0
    while ticks < 20:  # the loop keeps turning meanwhile
        await asyncio.sleep(0.005)
        ticks += 1
    assert not pending.done()
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(pending, 10) == (2, 2)
    assert db.batcher.on_loop_batches == on_loop  # that batch ran on the connection's thread
    db.batcher.on_loop = False  # the thread path alone works too
    assert await db.run_unit(insert_unit(3, "c")) == (3, 3)
    assert await rows(db) == [(1, "a"), (2, "b"), (3, "c")]


@pytest.mark.asyncio
async def test_sqlite_wal_is_checkpointed_off_the_commit(sqlite_db):
    """The pool's connections never checkpoint in a COMMIT; a worker thread does, after writes."""
    import sqlite3

    db = sqlite_db
    async with db.database.connection() as connection:
        (autocheckpoint,), = await connection.raw_connection.execute_fetchall("PRAGMA wal_autocheckpoint")
    assert autocheckpoint == 0
    for k in range(20):
        await db.run_unit(insert_unit(k, "x" * 5000))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    assert db._checkpointer.checkpoints >= 1
    # every row is there for a fresh connection
    with sqlite3.connect(sqlite_path(db)) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (20,)


@pytest.mark.asyncio
async def test_sqlite_wal_starts_over_under_a_steady_stream_of_writes(sqlite_db):
    """A PASSIVE checkpoint never catches up with writers that never pause, and SQLite starts
    the WAL over only after one that did: without the restarting checkpoint the WAL grew by
    gigabytes under load. With it, the WAL stays near RESTART_FRAMES pages while far more is
    written (it is reused from its beginning), and every row is there."""
    import os
    import sqlite3

    db, path = sqlite_db, sqlite_path(sqlite_db)
    # a short test writes faster than a server does (about 100 MB/s): checkpoint more often
    db._checkpointer.RESTART_FRAMES = 300  # about 1.2 MB
    db._checkpointer.INTERVAL = 0.05
    largest_wal = 0
    written = 0

    async def writer(first: int) -> None:
        nonlocal largest_wal, written
        for k in range(first, first + 100_000, 8):
            if written >= 20_000:
                return
            written += 1
            await db.run_unit(insert_unit(k, "x" * 3000))  # about a page each
            largest_wal = max(largest_wal, os.path.getsize(f"{path}-wal"))

    await asyncio.gather(*(writer(i) for i in range(8)))
    assert written == 20_000  # a page each: about 80 MB went through the WAL
    assert largest_wal < 40e6, f"the WAL grew to {largest_wal / 1e6:.1f} MB"  # it is reused
    assert db._checkpointer.restarts >= 3
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*), (SELECT n FROM total) FROM t").fetchone() == (20_000, 20_000)
