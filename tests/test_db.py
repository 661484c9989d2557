"""The database wrapper: on SQLite, the writers of one process take turns, first come first served."""

from __future__ import annotations

import asyncio

import pytest

from server.db import Db


@pytest.mark.asyncio
async def test_sqlite_writers_wait_in_arrival_order_behind_a_transaction(tmp_path):
    db = Db(f"sqlite:///{tmp_path / 'turns.db'}")
    await db.connect()
    try:
        await db.execute("CREATE TABLE t (n INTEGER)")
        release = asyncio.Event()

        async def long_transaction() -> None:
            async with db.transaction():
                await db.execute("INSERT INTO t (n) VALUES (-1)")
                await release.wait()
                await db.raw_fetch("INSERT INTO t (n) VALUES (-2) RETURNING n")  # its own writes go on

        async def write(n: int) -> None:
            await db.execute("INSERT INTO t (n) VALUES (:n)", {"n": n})

        holder = asyncio.create_task(long_transaction())
        await asyncio.sleep(0.05)
        writers = []
        for n in range(20):
            writers.append(asyncio.create_task(write(n)))
            await asyncio.sleep(0.01)  # they arrive in this order while the transaction holds the lock
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, *writers), timeout=20)
        rows = await db.raw_fetch("SELECT n FROM t ORDER BY rowid")
        assert [n for (n,) in rows] == [-1, -2, *range(20)]
    finally:
        await db.disconnect()
