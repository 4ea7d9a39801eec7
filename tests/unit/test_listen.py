"""The check that the server can listen, made before anything starts: as the server binds."""

from __future__ import annotations

import socket

import pytest

from gateway.app import can_listen
from gateway.errors import ListenError


async def test_a_taken_port_is_refused_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: address"):
            await can_listen("127.0.0.1", port)


@pytest.mark.parametrize("host", ["", "localhost", "127.0.0.1"])
async def test_every_host_the_server_takes_is_taken(host: str) -> None:
    """The first version bound the first address only: "" (all interfaces) was refused."""
    await can_listen(host, 0)


async def test_a_host_that_does_not_resolve_says_so() -> None:
    """A resolver's error was spelled "unknown error -2"."""
    with pytest.raises(ListenError, match=r"not known|no address|failure in name"):
        await can_listen("no-such-host.invalid", 0)
