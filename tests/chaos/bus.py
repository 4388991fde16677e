"""The chaos run's Service Bus: the test emulator in its own process, restartable at will.

    python -m tests.chaos.bus --port 0 --lock-duration 10

A process of its own, like the real service: the harness's own work (generating and
uploading documents) must not slow the broker down through a shared interpreter. It
prints one JSON line (`connection_string`, `port`, `queue`), then answers commands read
from stdin, one JSON line each:

    stop    drop every connection and stop listening (messages and locks are kept,
            as a Service Bus outage keeps them)
    start   listen again on the same port
    stats   the queue's counts (`active`, `scheduled`, `locked`, `dead_letter`, ...),
            `completed` (messages completed so far) and `duplicates_dropped`
    quit    stop and exit (so does end of input)

`BusProcess` is the harness's side of it; `dead_letters` reads the dead-letter queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from sheaf.adapters.bus_servicebus import ServiceBusMessageBus
from sheaf.domain.messages import MalformedMessage, decode
from tests.servicebus_emulator import Broker, EmulatorServer, QueueConfig

QUEUE = "documents"


async def serve(args: argparse.Namespace) -> None:
    queue = QueueConfig(
        QUEUE,
        lock_duration=args.lock_duration,
        max_delivery_count=args.max_delivery_count,
        duplicate_detection_window=600.0,
    )
    broker = Broker([queue])
    server = EmulatorServer(broker, args.host, args.port)
    await server.start()
    say({"connection_string": server.connection_string, "port": server.port, "queue": QUEUE})
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            command = line.strip()
            if command == "quit":
                break
            say(await answer(command, server, broker))
    finally:
        await server.stop()


async def answer(command: str, server: EmulatorServer, broker: Broker) -> dict[str, Any]:
    if command == "stop":
        await server.stop()
    elif command == "start":
        await server.start()
    elif command != "stats":
        return {"error": f"unknown command {command!r}; use stop, start, stats or quit"}
    return {
        "running": server.running,
        **broker.counts(QUEUE),
        "completed": len(broker.completed.get(QUEUE, [])),
        "duplicates_dropped": len(broker.dropped_duplicates.get(QUEUE, [])),
    }


def say(answer: dict[str, Any]) -> None:
    print(json.dumps(answer), flush=True)


class BusProcess:
    """The harness's handle on `python -m tests.chaos.bus`; commands are serialised."""

    def __init__(self, root: Path, log: IO[bytes], lock_duration: float, port: int = 0) -> None:
        command = [sys.executable, "-m", "tests.chaos.bus", "--port", str(port)]
        command += ["--lock-duration", str(lock_duration)]
        self.proc = subprocess.Popen(
            command, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
        )
        self._lock = threading.Lock()
        hello = self._read()
        self.connection_string: str = hello["connection_string"]
        self.queue: str = hello["queue"]

    def command(self, command: str) -> dict[str, Any]:
        """Send one command and wait for its answer (blocking: call it from a thread)."""
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{command}\n".encode())
            self.proc.stdin.flush()
            return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the Service Bus emulator process ended; see its log")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
                self.proc.wait(15)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def dead_letters(connection_string: str, queue: str) -> list[dict[str, Any]]:
    """Every message in `queue`'s dead-letter queue, read over the SDK as an operator
    would (`sheaf dlq list` reads it the same way), with the document it names."""
    bus = ServiceBusMessageBus.from_connection_string(connection_string, queue)
    try:
        found = await bus.peek_dead_letters(limit=1_000_000)
    finally:
        await bus.close()
    return [
        {
            "message_id": letter.message_id,
            "document_id": _document_id(letter.body),
            "reason": letter.reason,
            "description": letter.description,
            "delivery_count": letter.delivery_count,
        }
        for letter in found
    ]


def _document_id(body: bytes) -> str | None:
    try:
        return decode(body).document_id
    except MalformedMessage:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--lock-duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--max-delivery-count", type=int, default=10)
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
