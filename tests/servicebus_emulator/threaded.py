"""Run the emulator on a background thread with its own event loop.

Its own thread is what lets both SDK flavours use it: a sync client blocks its thread, and
an aio client needs the test's loop free, so the server must live on neither. Everything
that touches broker state from another thread goes through `call()`, which runs on the
emulator's loop and waits for the answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from .broker import Broker, Clock, Completed, QueueConfig
from .server import EmulatorServer

T = TypeVar("T")
_TIMEOUT = 10.0


class ThreadedEmulator:
    """A started emulator; `close()` (or the context manager) stops it and its thread.

    `stop()` and `start()` simulate an outage and recovery on the same port: connections
    are dropped, the broker (messages, locks, counters) is kept.
    """

    def __init__(
        self,
        queues: Iterable[QueueConfig],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.time,
    ) -> None:
        self.broker = Broker(queues, clock=clock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="servicebus-emulator", daemon=True
        )
        self._thread.start()
        self._server = self._run(self._create_server(host, port))
        self.start()

    async def _create_server(self, host: str, port: int) -> EmulatorServer:
        return EmulatorServer(self.broker, host, port)  # its Event belongs to this loop

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_TIMEOUT)

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def connection_string(self) -> str:
        return self._server.connection_string

    @property
    def running(self) -> bool:
        return self._server.running

    def start(self) -> None:
        self._run(self._server.start())

    def stop(self) -> None:
        self._run(self._server.stop())

    def close(self) -> None:
        """Stop serving, end the loop and join the thread; nothing is left behind."""
        if not self._thread.is_alive():
            return
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError("the Service Bus emulator's thread did not stop")
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def __enter__(self) -> ThreadedEmulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the emulator's loop (where broker state lives)."""

        async def run() -> T:
            result = function(*args)
            self._server.wake()
            return result

        return self._run(run())

    def add_queue(self, name: str, **settings: Any) -> str:
        """Create a queue (settings as in `QueueConfig`); return its name."""
        self.call(self.broker.add_queue, QueueConfig(name, **settings))
        return name

    def counts(self, queue: str) -> dict[str, int]:
        """`active`, `scheduled`, `deferred`, `locked` and `dead_letter` message counts."""
        return self.call(self.broker.counts, queue)

    def expire_locks(self, address: str) -> int:
        """Make the service lose every lock on `address` now (see `Broker.expire_locks`)."""
        return self.call(self.broker.expire_locks, address)

    def renew_lock_count(self, queue: str) -> int:
        """How many renew-lock requests reached `queue` (or its dead-letter queue)."""
        return self.call(lambda: self.broker.renew_lock_calls[queue])

    def completed(self, address: str) -> list[Completed]:
        """Messages completed on `address` so far, in order, with their delivery counts."""
        return self.call(lambda: list(self.broker.completed.get(address, [])))

    def dropped_duplicates(self, queue: str) -> list[str]:
        """Message ids `queue` dropped as duplicates so far."""
        return self.call(lambda: list(self.broker.dropped_duplicates.get(queue, [])))
