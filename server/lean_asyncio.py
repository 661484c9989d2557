"""asyncio's Queue and Event as each WebSocket connection holds them, without their idle buffers.

Every WebSocket connection holds two queues for as long as it lives (uvicorn's queue of received
messages and Engine.IO's queue of packets to send) and an Event (uvicorn's `writable`). An idle
`asyncio.Queue` is about 3.3 KB (three deques and an Event with a deque of its own, each deque
760 bytes with its 64-slot block) and an `asyncio.Event` about 0.8 KB: with many idle connections,
about a sixth of the server's memory per connection. These hold nothing but a few slots while
idle: a deque or a list of waiters is made when something is queued or waits.

`LeanQueue` has the interface its two users need (`put`, `put_nowait`, `get`, `get_nowait`, `task_done`,
`join`, `qsize`, `empty`, `full`), and `asyncio.Queue`'s behaviour for an unbounded queue: items
come out in the order they went in, one waiting `get` is woken per item, a cancelled `get` passes
its wake-up on, `join` waits until every item put has been marked done. `_queue` holds the items,
as in `asyncio.Queue` (direct_write.py reads it): a deque while there are any, else an empty tuple.

`LeanEvent` has `asyncio.Event`'s interface and behaviour: `wait` returns at once while set, else
when `set` is next called; `clear` makes later waits wait.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

_NOTHING = ()  # the items of an empty queue: an idle queue holds no deque (760 bytes)


class LeanQueue:
    """An unbounded FIFO queue for one event loop (see the module)."""

    __slots__ = ("_queue", "_getters", "_joiners", "_unfinished")

    def __init__(self) -> None:
        self._queue: collections.deque | tuple = _NOTHING
        self._getters: list[asyncio.Future] | None = None  # made when a get first waits
        self._joiners: list[asyncio.Future] | None = None  # made when a join first waits
        self._unfinished = 0

    def __repr__(self) -> str:
        return f"<LeanQueue size={len(self._queue)} unfinished={self._unfinished}>"

    def qsize(self) -> int:
        return len(self._queue)

    def empty(self) -> bool:
        return not self._queue

    def full(self) -> bool:
        return False

    def put_nowait(self, item: Any) -> None:
        if self._queue is _NOTHING:
            self._queue = collections.deque()
        self._queue.append(item)
        self._unfinished += 1
        self._wake_one_getter()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._queue:
            raise asyncio.QueueEmpty
        return self._take()

    async def get(self) -> Any:
        while not self._queue:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                # woken for an item, then cancelled: the next getter gets the wake-up instead
                if self._queue and not getter.cancelled():
                    self._wake_one_getter()
                raise
        return self._take()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        if self._unfinished > 0:
            joiner = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(joiner)
            try:
                await joiner
            finally:
                if self._joiners is not None and joiner in self._joiners:
                    self._joiners.remove(joiner)

    def _take(self) -> Any:
        item = self._queue.popleft()
        if not self._queue:
            self._queue = _NOTHING
        return item

    def _wake_one_getter(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


class LeanEvent:
    """asyncio.Event without its deque of waiters while nothing waits (see the module)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future] | None = None

    def __repr__(self) -> str:
        return f"<LeanEvent {'set' if self._value else 'unset'}>"

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            waiters, self._waiters = self._waiters, None
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
