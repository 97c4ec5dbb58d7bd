"""`python -m server`: run the gRPC server until SIGTERM/SIGINT, then drain and exit."""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop

from server.app import Application
from server.core.config import ConfigurationError, Settings
from server.core.logs import configure_logging


async def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    app = Application.build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app.start_metrics()
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()


if __name__ == "__main__":
    try:
        uvloop.run(main())
    except ConfigurationError as error:
        sys.exit(f"server: configuration error: {error}")
