"""Auto-pipelining: the commands that a worker's requests send to one Redis node in the same
event-loop iteration go out as one write on one connection, and their replies come back in
one read, as ioredis and the Go clients do. Redis then reads, runs and answers a whole batch
per wake-up (and, with appendfsync always, fsyncs once for it), and the worker pays one
syscall each way per batch instead of a pooled connection's checkout, send and read per
command.

A Pipe owns one connection of redis-py's own (its pool's or its Cluster node's, so AUTH,
CLIENT SETNAME, Sentinel's master discovery and the hiredis parser are redis-py's) and sends
one batch at a time: while a batch is out, the next one gathers. Every caller has its own
deadline, a timer on the loop that fails its future with TimeoutError (cheaper than an
asyncio.timeout around each call: no cancellation to undo); the batch has the latest of
them, after which the connection is dropped. A dropped connection is
opened again and the unanswered commands sent once more, as redis-py's own retry would: every
write script is idempotent for the same arguments.

Writes that replicas must confirm go to a Pipe of their own per node, which ends each batch
with one WAIT: WAIT counts the replicas that hold every earlier write of its connection, so
one WAIT confirms the whole batch, and a WAIT held up by a lagging replica never holds up a
read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis
from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection

# A batch's commands at most: a bigger backlog goes out as several writes, one after another.
MAX_BATCH_COMMANDS = 512
# What a dropped connection raises: redis-py's ConnectionError, the socket's own OSError, and
# uvloop's RuntimeError for a write on a transport the server has just closed.
_DROPPED = (rx.ConnectionError, OSError, RuntimeError)

Connect = Callable[[], Awaitable[AbstractConnection]]
Command = tuple[Any, ...]


class _Entry:
    """One caller's commands, the future of their replies, and its deadline's timer."""

    __slots__ = ("commands", "future", "deadline", "timer")

    def __init__(self, commands: Sequence[Command], future: asyncio.Future[list[Any]], deadline: float) -> None:
        self.commands, self.future, self.deadline = commands, future, deadline
        self.timer = asyncio.get_running_loop().call_at(deadline, _expire, future)


class Pipe:
    """The batches of one node (and kind: reads and plain writes, or writes to confirm)."""

    __slots__ = ("_connect", "_wait", "_conn", "_pending", "_task")

    def __init__(self, connect: Connect, wait: tuple[int, int] | None = None) -> None:
        self._connect = connect
        # (replicas, timeout_ms) of the WAIT that ends each batch, on a Pipe of writes to confirm.
        self._wait = wait
        self._conn: AbstractConnection | None = None
        self._pending: list[_Entry] = []
        self._task: asyncio.Task[None] | None = None

    def send(self, commands: Sequence[Command], timeout_s: float) -> asyncio.Future[list[Any]]:
        """Queue commands for the next batch. The future's result is their replies in order
        (an error reply as its exception object), then the batch's WAIT reply on a Pipe of
        writes to confirm; a failure to reach Redis is its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append(_Entry(commands, future, loop.time() + timeout_s))
        if self._task is None:
            # Runs after every callback already due in this iteration: their commands join.
            self._task = loop.create_task(self._run())
        return future

    async def _run(self) -> None:
        try:
            while self._pending:
                taken = commands = 0
                for entry in self._pending:
                    if commands >= MAX_BATCH_COMMANDS:
                        break
                    commands += len(entry.commands)
                    taken += 1
                batch, self._pending = self._pending[:taken], self._pending[taken:]
                await self._send(batch)
        except BaseException as exc:  # cancelled at shutdown: nobody is left waiting
            for entry in self._pending:
                _fail(entry, exc)
            self._pending.clear()
            raise
        finally:
            self._task = None

    async def _send(self, batch: list[_Entry]) -> None:
        for attempt in (1, 2):
            todo = [e for e in batch if not e.future.done()]  # a caller past its deadline is gone
            if not todo:
                return
            try:
                async with asyncio.timeout_at(max(e.deadline for e in todo)):
                    await self._exchange(todo)
                return
            except TimeoutError as exc:  # the deadline passed (an OSError too: caught first)
                await self._drop()
                for entry in todo:
                    _fail(entry, exc)
                return
            except _DROPPED as exc:
                await self._drop()
                if attempt == 2:
                    for entry in todo:
                        _fail(entry, exc)
            except Exception as exc:  # anything else the connection met: the batch's answer
                await self._drop()
                for entry in todo:
                    _fail(entry, exc)
                return
            except BaseException as exc:  # cancelled at shutdown
                await self._drop()
                for entry in todo:
                    _fail(entry, exc)
                raise

    async def _exchange(self, todo: list[_Entry]) -> None:
        conn = self._conn
        if conn is None:
            conn = self._conn = await self._connect()
        commands = [c for entry in todo for c in entry.commands]
        if self._wait is not None:
            commands.append(("WAIT", *self._wait))
        # hiredis packs in C what redis-py's pack_commands does in Python: 27 -> 3.7 us for a
        # check-in's EVALSHA on the bench machine; the bytes are the same.
        await conn.send_packed_command(b"".join(map(hiredis.pack_command, commands)), check_health=False)
        waiting: list[tuple[_Entry, list[Any]]] = []
        for entry in todo:
            replies = [await _reply(conn) for _ in entry.commands]
            if self._wait is None:
                _resolve(entry, replies)
            else:
                waiting.append((entry, replies))
        if self._wait is not None:
            acked = await _reply(conn)
            for entry, replies in waiting:
                _resolve(entry, [*replies, acked])

    async def _drop(self) -> None:
        """Close the connection: its stream may hold half a reply. The next batch opens it
        again (on a Sentinel, at the master the sentinels name then)."""
        if self._conn is not None:
            await self._conn.disconnect(nowait=True)


async def _reply(conn: AbstractConnection) -> Any:
    try:
        return await conn.read_response()
    except rx.ResponseError as error:  # an error reply: the caller's, not the connection's
        return error


def _resolve(entry: _Entry, replies: list[Any]) -> None:
    entry.timer.cancel()
    if not entry.future.done():
        entry.future.set_result(replies)


def _fail(entry: _Entry, exc: BaseException) -> None:
    entry.timer.cancel()
    if not entry.future.done():
        entry.future.set_exception(exc if isinstance(exc, Exception) else rx.ConnectionError("shut down"))


def _expire(future: asyncio.Future[list[Any]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("no reply from Redis within the call's timeout"))

