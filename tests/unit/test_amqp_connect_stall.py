"""A connection attempt that times out says why it may have (issue 21): a port that accepts TCP
and never answers the AMQP handshake (a node out of file handles behaves so) gets the hint with
how to check. Real sockets, no RabbitMQ."""

from __future__ import annotations

import asyncio

import pytest

from paota.brokers.amqp.calls import open_connection
from paota.core.errors import BrokerError


async def test_a_handshake_that_stalls_on_open_tcp_names_file_handles_and_how_to_check() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(BrokerError) as caught:
            await open_connection(
                f"amqp://guest:guest@127.0.0.1:{port}/",
                name="t",
                shown=f"amqp://127.0.0.1:{port}/",
                timeout_s=0.5,
            )
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    text = str(caught.value)
    assert "no answer within 0.5 s" in text
    assert "accepted the TCP connection but never answered the AMQP handshake" in text
    assert "file handles" in text and "file_handle_cache:info()" in text
    assert "paota ladders" in text
