"""The asyncio AMQP 1.0 server: the listener, connections, and the delivery pump.

One `EmulatorServer` owns a `Broker` and any number of client connections. All state
lives on one event loop, so no locks are needed; `dispatch()` hands available messages to
receivers with credit, one per receiver per round, and a timer task re-runs it when a lock
expires or a scheduled message becomes visible.

`stop()` drops every connection at once, as a network outage would, and keeps the broker;
`start()` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .broker import Broker
from .codec import AMQPDecodeError
from .frames import (
    AMQP_HEADER,
    SASL_FRAME,
    SASL_HEADER,
    Begin,
    Close,
    Composite,
    End,
    Error,
    Frame,
    Open,
    SaslInit,
    SaslMechanisms,
    SaslOutcome,
    decode_frame,
    encode_frame,
    frame_size,
)
from .links import DeliveryLink, Link
from .session import SESSION_WINDOW, ProtocolViolation, Session

_LOG = logging.getLogger(__name__)

MAX_FRAME_SIZE = 65536
# The longest the pump sleeps between lock-expiry / schedule checks.
MAX_TIMER_SLEEP = 0.25


class EmulatorServer:
    """Serves one broker on `host:port` (port 0 picks a free one, kept across restarts)."""

    def __init__(self, broker: Broker, host: str = "127.0.0.1", port: int = 0) -> None:
        self.broker = broker
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._delivery_links: list[DeliveryLink] = []

    @property
    def connection_string(self) -> str:
        return (
            f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName=emulator;"
            "SharedAccessKey=emulator;UseDevelopmentEmulator=true"
        )

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._timer = asyncio.create_task(self._run_timer(), name="servicebus-emulator-timer")

    async def stop(self) -> None:
        """Close the listener and drop every connection without a goodbye."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None
        for connection in list(self._connections):
            connection.abort()
        # An aborted socket ends its handler by itself; cancelling one instead would make
        # asyncio's stream machinery log the CancelledError as an error.
        if self._tasks:
            _, stuck = await asyncio.wait(set(self._tasks), timeout=5)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        await server.wait_closed()
        self._delivery_links.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection = Connection(self, reader, writer)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            self._tasks.discard(task)
            await connection.close()

    # ---------------------------------------------------------------- delivery pump

    def register(self, link: DeliveryLink) -> None:
        self._delivery_links.append(link)

    def unregister(self, link: Link) -> None:
        if link in self._delivery_links:
            self._delivery_links.remove(link)

    def wake(self) -> None:
        """Something changed (a send, a settlement, new credit): deliver soon."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def dispatch(self) -> None:
        """Give each receiver with credit one message per round until nothing moves."""
        self.broker.expire()
        progress = True
        while progress:
            progress = False
            for link in list(self._delivery_links):
                progress = link.pump() or progress
            if self._delivery_links:  # rotate, so no receiver is always served first
                self._delivery_links.append(self._delivery_links.pop(0))

    async def _run_timer(self) -> None:
        # A bare future and call_later, not asyncio.wait_for: on Python 3.11 a cancel that
        # races wait_for's own timeout can leave the task stuck in "cancelling" forever.
        loop = asyncio.get_running_loop()
        while True:
            self.dispatch()
            deadline = self.broker.next_deadline()
            delay = MAX_TIMER_SLEEP
            if deadline is not None:
                delay = min(delay, max(0.005, deadline - self.broker.clock()))
            self._wakeup = loop.create_future()
            alarm = loop.call_later(delay, self.wake)
            try:
                await self._wakeup
            finally:
                alarm.cancel()


class Connection:
    """One client socket: protocol headers, SASL, then AMQP frames until close."""

    def __init__(
        self, server: EmulatorServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self._reader = reader
        self._writer = writer
        self.remote_max_frame_size = MAX_FRAME_SIZE
        self._sessions: dict[int, Session] = {}  # by the client's channel
        self.closed = False

    def _forget_sessions(self) -> None:
        self.closed = True
        for session in self._sessions.values():
            session.detach_all()
        self._sessions.clear()

    def abort(self) -> None:
        """Drop the socket at once, unsent frames included (an outage, not a goodbye)."""
        self._forget_sessions()
        self._writer.transport.abort()

    async def close(self) -> None:
        """Flush what was written (a close frame, say) and close the socket."""
        self._forget_sessions()
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    def send(
        self, channel: int, body: Composite | None, payload: bytes = b"", kind: int = 0
    ) -> None:
        if not self.closed:
            self._writer.write(encode_frame(channel, body, payload, kind))

    async def run(self) -> None:
        try:
            await self._handshake()
            while not self.closed:
                header = await self._reader.readexactly(8)
                rest = await self._reader.readexactly(frame_size(header) - 8)
                self._handle(decode_frame(header + rest))
                await self._writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except (AMQPDecodeError, ProtocolViolation) as exc:
            _LOG.warning("closing connection: %s", exc)
            self.send(0, Close(Error("amqp:decode-error", str(exc))))

    async def _handshake(self) -> None:
        header = await self._reader.readexactly(8)
        if header == SASL_HEADER:
            self._writer.write(SASL_HEADER)
            self.send(0, SaslMechanisms(("ANONYMOUS", "PLAIN", "MSSBCBS")), kind=SASL_FRAME)
            header = await self._reader.readexactly(8)
            frame = decode_frame(header + await self._reader.readexactly(frame_size(header) - 8))
            if not isinstance(frame.body, SaslInit):
                raise ProtocolViolation(f"expected sasl-init, got {frame.body!r}")
            self.send(0, SaslOutcome(code=0), kind=SASL_FRAME)
            header = await self._reader.readexactly(8)
        if header != AMQP_HEADER:
            self._writer.write(AMQP_HEADER)
            raise ProtocolViolation(f"unsupported protocol header {header!r}")
        self._writer.write(AMQP_HEADER)

    def _handle(self, frame: Frame) -> None:
        body = frame.body
        if body is None:
            return  # heartbeat
        if isinstance(body, Open):
            self._on_open(body)
        elif isinstance(body, Begin):
            self._on_begin(frame.channel, body)
        elif isinstance(body, Close):
            self.send(0, Close())
            self._forget_sessions()
        else:
            session = self._sessions.get(frame.channel)
            if session is None:
                raise ProtocolViolation(f"frame on unknown channel {frame.channel}")
            if isinstance(body, End):
                session.detach_all()
                del self._sessions[frame.channel]
                self.send(session.channel, End())
            else:
                session.handle(body, frame.payload)

    def _on_open(self, frame: Open) -> None:
        self.remote_max_frame_size = min(frame.max_frame_size or 2**32 - 1, 2**32 - 1)
        self.send(
            0,
            Open(
                container_id="sheaf-servicebus-emulator",
                hostname=frame.hostname,
                max_frame_size=MAX_FRAME_SIZE,
                channel_max=255,
            ),
        )

    def _on_begin(self, channel: int, frame: Begin) -> None:
        used = {session.channel for session in self._sessions.values()}
        ours = next(number for number in range(256) if number not in used)
        session = Session(self, ours, frame)
        self._sessions[channel] = session
        self.send(
            ours,
            Begin(
                remote_channel=channel,
                next_outgoing_id=session.next_outgoing_id,
                incoming_window=SESSION_WINDOW,
                outgoing_window=SESSION_WINDOW,
                handle_max=255,
            ),
        )
