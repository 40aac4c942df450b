"""The pool lends connections whose descriptors are numbered above 1024.

A process with many sockets open (streams, webhook receivers, other pools) gets such numbers
for its database connections, and ``select.select()`` refuses them.
"""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from checkpoints import open_persistence
from checkpoints.store import PostgresStore
from tests.utils.db import fresh_schema

SOCKETS = 1100
# The pool tries a connection by a round trip once it has been idle this long (in seconds).
IDLE_CHECK = 2.0


@contextmanager
def many_sockets(count: int) -> Iterator[list[socket.socket]]:
    """``count`` open sockets (with the soft descriptor limit raised for them), closed after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
    sockets: list[socket.socket] = []
    try:
        for _ in range(count // 2):
            sockets.extend(socket.socketpair())
        yield sockets
    finally:
        for s in sockets:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_connections_with_descriptors_above_1024_are_lent(tmp_path: Path) -> None:
    with fresh_schema() as url, many_sockets(SOCKETS) as sockets:
        assert max(s.fileno() for s in sockets) > 1024
        async with open_persistence(
            database_url=url, sqlite_path=tmp_path / "unused.sqlite"
        ) as persistence:
            store = persistence.store
            assert isinstance(store, PostgresStore)
            async with store.pool.connection() as conn:
                assert conn.fileno() > 1024, "the test needs a connection numbered above 1024"
            # Returned moments ago: each loan looks at the socket for a word from the server.
            await store.create_session("fd-test", pack_name="store", pack_version="1")
            for _ in range(5):
                assert (await store.get_session("fd-test")) is not None
            # Idle past the check: the loan tries the connection with a round trip.
            await asyncio.sleep(IDLE_CHECK + 0.3)
            assert (await store.get_session("fd-test")) is not None
            assert await store.last_event_id() == 0
