"""A local HTTP endpoint for webhook tests: it records every request it gets and answers each
with the next status of a script (say: 500, 500, then 200 for good), or hangs, or is down.

It is a small HTTP/1.1 server on asyncio streams bound to 127.0.0.1 (one request per
connection), so a test sees exactly the bytes paota sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Received", "Sink"]


@dataclass
class Received:
    """One request as the sink got it, and what it answered."""

    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        """The JSON body."""
        return dict(json.loads(self.body))


@dataclass
class Sink:
    """``statuses`` are answered in turn, the last one from then on; ``hang_s`` delays every
    answer (a slow endpoint)."""

    statuses: Iterable[int] = (200,)
    hang_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _script: list[int] = field(default_factory=list)
    _server: asyncio.Server | None = None

    def __post_init__(self) -> None:
        self._script = list(self.statuses) or [200]

    @property
    def url(self) -> str:
        """Where it listens."""
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> Sink:
        """Listen (on the same port as before, after a :meth:`stop`)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening: requests are refused until :meth:`start` (the endpoint is down)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    def accepted(self) -> list[Received]:
        """The requests answered with a 2xx."""
        return [r for r in self.received if 200 <= r.status < 300]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            _, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self._script.pop(0) if len(self._script) > 1 else self._script[0]
            self.received.append(Received(time.monotonic(), path, headers, body, status))
            if self.hang_s:
                await asyncio.sleep(self.hang_s)
            reason = "OK" if status < 400 else "Error"
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
