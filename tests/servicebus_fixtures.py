"""pytest fixture `servicebus_emulator`: a fresh in-process Service Bus emulator per test.

The emulator runs on a background thread with its own event loop, so sync SDK clients (which
block their thread) and aio SDK clients (which need the test's loop) both work. The fixture
yields a `ThreadedEmulator` with:

- `connection_string` for `ServiceBusClient.from_connection_string` (sync or aio);
- `queue_name`: the default queue `documents` (lock 30 s, max delivery count 10, duplicate
  detection over 10 minutes); `add_queue(name, lock_duration=1, ...)` makes others;
- `broker` and `counts(queue)` / `renew_lock_count(queue)` to inspect state, `call(fn)` to
  run anything else against the broker on the emulator's thread;
- `stop()` / `start()` to simulate an outage and recovery on the same port.

Use it with `from tests.servicebus_fixtures import servicebus_emulator  # noqa: F401`, or
import it in a conftest. Teardown stops the server and joins its thread; no socket or
thread outlives the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servicebus_emulator import QueueConfig, ThreadedEmulator

DEFAULT_QUEUE = QueueConfig(
    "documents", lock_duration=30.0, max_delivery_count=10, duplicate_detection_window=600.0
)


class ServiceBusEmulator(ThreadedEmulator):
    """A `ThreadedEmulator` that knows which queue the test should use by default."""

    queue_name = DEFAULT_QUEUE.name


@pytest.fixture
def servicebus_emulator() -> Iterator[ServiceBusEmulator]:
    emulator = ServiceBusEmulator([DEFAULT_QUEUE])
    try:
        yield emulator
    finally:
        emulator.close()
