"""Run a mongoeco MongoDB wire-protocol server (memory engine) until killed.

Started by :mod:`tests.integration.mongo_server` with the Python >= 3.13 interpreter of its own
virtualenv (mongoeco needs 3.13; the project runs on 3.11 to 3.13), never imported by the tests::

    python3.13 mongoeco_launcher.py PORT

Prints the server's URI on one line once it accepts connections, then serves until SIGTERM/SIGKILL.
PORT 0 picks a free port (the printed URI says which).
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def _serve(port: int) -> None:
    from mongoeco.engines import MemoryEngine  # type: ignore[import-not-found]
    from mongoeco.wire import AsyncMongoEcoProxyServer  # type: ignore[import-not-found]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncMongoEcoProxyServer(
        engine=MemoryEngine(), host="127.0.0.1", port=port
    ) as server:
        print(server.address.uri, flush=True)
        await stop.wait()


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    asyncio.run(_serve(port))


if __name__ == "__main__":
    main()
