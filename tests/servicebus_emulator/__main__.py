"""Start the emulator by hand and print its connection string.

    python -m tests.servicebus_emulator --port 5672 \
        --queue documents:max_delivery_count=10,lock_duration=30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from .broker import Broker, QueueConfig
from .server import EmulatorServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.servicebus_emulator")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5672, help="0 picks a free port")
    parser.add_argument(
        "--queue",
        action="append",
        type=QueueConfig.parse,
        metavar="NAME[:key=value,...]",
        help="a queue; keys: lock_duration, max_delivery_count, duplicate_detection_window "
        "(seconds). Repeat for more queues. Default: documents",
    )
    parser.add_argument("--verbose", action="store_true", help="log protocol warnings")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    queues = args.queue or [QueueConfig("documents")]
    server = EmulatorServer(Broker(queues), args.host, args.port)
    await server.start()
    print(server.connection_string, flush=True)
    for queue in queues:
        print(f"queue {queue}", flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
