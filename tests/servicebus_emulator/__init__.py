"""A Service Bus emulator for tests: an AMQP 1.0 server the unmodified azure-servicebus SDK
(sync and aio) talks to over loopback. See README.md in this folder for what it supports.

    with ThreadedEmulator([QueueConfig("documents", lock_duration=5)]) as emulator:
        client = ServiceBusClient.from_connection_string(emulator.connection_string)
"""

from .broker import Broker, QueueConfig
from .server import EmulatorServer
from .threaded import ThreadedEmulator

__all__ = ["Broker", "EmulatorServer", "QueueConfig", "ThreadedEmulator"]
