"""The chaos run: upload N documents while SIGKILLing workers, then let a checker judge.

    python -m tests.chaos.run --documents 1000 --workers 4

It creates a fresh PostgreSQL database (unless given `--database-url`), starts the API
(`python -m sheaf api`, which also sweeps expired leases) and W worker processes
(`python -m sheaf worker`), uploads the corpus of `tests/chaos/corpus.py` over HTTP,
and meanwhile SIGKILLs a random worker every few seconds (restarting it at once) and,
once, terminates every PostgreSQL connection of the database (`pg_terminate_backend`;
a server restart is not safe on a shared machine). When no document is queued or
processing any more, it stops everything and runs `tests/chaos/check.py`, which judges
the run from the database alone; this script's exit status is the checker's.

With `--bus servicebus` the wake-ups travel through the Service Bus test emulator, run
as a process of its own (`tests/chaos/bus.py`), and once, `--bus-restart-after` seconds
in, the emulator is stopped for `--bus-down` seconds and started again on the same port:
workers poll the database meanwhile and return to messages afterwards. After the run the
harness waits for the queue to drain, then reads the dead-letter queue over the SDK and
hands it to the checker, for which a healthy document in the DLQ is a failure.

Throughout, the API's and every worker's `/healthz` are probed (`tests/chaos/health.py`).

The harness itself only reports what it did (kills, restarts, connections terminated,
emulator restart, /healthz failures, durations); it never decides whether a document
was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg2

from sheaf.adapters.sql.migrate import upgrade
from tests.chaos.bus import BusProcess, dead_letters
from tests.chaos.corpus import document
from tests.chaos.health import Life, Tally, watch

ROOT = Path(__file__).resolve().parents[2]
ADMIN_DSN = os.environ.get("SHEAF_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

# Short leases so a killed worker's documents come back within seconds.
TIMERS = {
    "SHEAF_LEASE_SECONDS": "4",
    "SHEAF_HEARTBEAT_SECONDS": "1",
    "SHEAF_SWEEP_INTERVAL_SECONDS": "0.5",
    "SHEAF_POLL_INTERVAL_SECONDS": "0.2",
    "SHEAF_RECONCILE_INTERVAL_SECONDS": "2",
    "SHEAF_CLEANUP_INTERVAL_SECONDS": "5",
    "SHEAF_RETRY_BASE_SECONDS": "0.5",
    "SHEAF_RETRY_MAX_SECONDS": "4",
    "SHEAF_MAX_ATTEMPTS": "10",
    "SHEAF_SHUTDOWN_GRACE_SECONDS": "5",
    "SHEAF_LOG_FORMAT": "json",
    "SHEAF_LOG_LEVEL": "WARNING",
}
# With Service Bus: retry it every few seconds while it is down (so workers return to
# messages soon after the restart), and re-send wake-ups the outage lost after one
# minute rather than two (not less: the reconciler also re-sends for every document
# merely waiting in a backlog, and a shorter threshold multiplies those messages).
BUS_TIMERS = {
    "SHEAF_SERVICEBUS_RETRY_SECONDS": "5",
    "SHEAF_RECONCILE_AFTER_SECONDS": "60",
}


@dataclass
class Report:
    """What the harness did; printed next to the checker's verdict."""

    documents: int = 0
    bus: str = "none"
    uploads_done: bool = False
    upload_statuses: dict[int, int] = field(default_factory=dict)
    upload_retries: int = 0
    kills: int = 0
    restarts: int = 0
    connections_terminated: int = 0
    healthz: dict[str, Tally] = field(default_factory=lambda: {"api": Tally(), "workers": Tally()})
    bus_restarts: int = 0
    bus_down_seconds: float = 0.0
    bus_restarted_at: float | None = None  # seconds into the run
    messages_completed_before_restart: int = 0
    messages_completed: int = 0
    polling_fallbacks: int = 0  # worker log lines: Service Bus unreachable, polling
    queue_left: dict[str, int] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)  # a side task that crashed
    upload_seconds: float = 0.0
    settle_seconds: float = 0.0
    drain_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def healthz_failed(self) -> int:
        return sum(tally.failed for tally in self.healthz.values())

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "healthz_failed": self.healthz_failed}


class Fleet:
    """The API and the workers as child processes, each logging to its own file.

    Each worker process gets its own `SHEAF_WORKER_ID` (`chaos-<slot>-<generation>`),
    so the harness can tell from the leases which processes are mid-document, and its
    own `SHEAF_WORKER_METRICS_PORT` (kept across restarts), where `/healthz` is probed.
    """

    def __init__(self, env: dict[str, str], logs: Path, api_port: int, ports: list[int]) -> None:
        self.env = env
        self.logs = logs
        self.api = self._start("api", ["api"], {})
        self.api_life = Life("api", f"http://127.0.0.1:{api_port}")
        self.lives = [Life(f"worker-{n}", f"http://127.0.0.1:{p}") for n, p in enumerate(ports)]
        self.ports = ports
        self.workers = [self._start_worker(n) for n in range(len(ports))]

    def worker_id(self, n: int) -> str:
        return f"chaos-{n}-{self.lives[n].generation}"

    def _start_worker(self, n: int) -> subprocess.Popen[bytes]:
        env = {
            "SHEAF_WORKER_ID": self.worker_id(n),
            "SHEAF_WORKER_METRICS_PORT": str(self.ports[n]),
        }
        return self._start(f"worker-{n}", ["worker"], env)

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "sheaf", *args],
            env={**self.env, **env},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )

    def kill_and_restart(self, n: int) -> None:
        self.lives[n].restarted()  # before the kill: a probe under way is excused
        self.workers[n].send_signal(signal.SIGKILL)
        self.workers[n].wait()
        self.workers[n] = self._start_worker(n)

    def revive_dead(self) -> int:
        """Restart workers that died on their own (they must not, but never stall the run)."""
        revived = 0
        for n, proc in enumerate(self.workers):
            if proc.poll() is not None:
                print(f"worker-{n} died by itself (exit {proc.returncode})", flush=True)
                self.lives[n].restarted()
                self.workers[n] = self._start_worker(n)
                revived += 1
        return revived

    def stop(self) -> None:
        for proc in [*self.workers, self.api]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.api]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def upload_all(
    base: str, args: argparse.Namespace, report: Report, parallel: int = 6
) -> None:
    """Upload every document, at `upload_rate` per second if set (users upload over time,
    and it keeps the workers busy for a known while); failed requests are retried."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(args.documents):
        queue.put_nowait(n)
    started = time.monotonic()

    async def uploader(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            if args.upload_rate:
                await asyncio.sleep(started + n / args.upload_rate - time.monotonic())
            name, data = await asyncio.to_thread(document, n, args.seed, args.scale)
            report.upload_statuses[n] = await upload_one(session, base, name, data, report)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(uploader(session) for _ in range(parallel)))
    report.uploads_done = True


async def upload_one(
    session: aiohttp.ClientSession, base: str, name: str, data: bytes, report: Report
) -> int:
    for attempt in range(30):
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name)
        try:
            async with session.post(f"{base}/v1/collections/chaos/documents", data=form) as r:
                if r.status in (200, 202):
                    return r.status
                body = await r.text()
        except aiohttp.ClientError as exc:
            body = repr(exc)
        report.upload_retries += 1
        print(f"upload of {name} failed (attempt {attempt + 1}): {body[:200]}", flush=True)
        await asyncio.sleep(0.5)
    raise RuntimeError(f"could not upload {name}")


async def counts(session: aiohttp.ClientSession, base: str) -> dict[str, int] | None:
    """Documents per status, or None while the API cannot say (e.g. its database is cut)."""
    try:
        async with session.get(f"{base}/v1/stats") as response:
            if response.status != 200:
                return None
            body: dict[str, Any] = await response.json()
    except aiohttp.ClientError:
        return None
    return {k: int(v) for k, v in body["counts"].items()}


async def chaos(
    fleet: Fleet, args: argparse.Namespace, dsn: str, report: Report, stop: asyncio.Event
) -> None:
    """Every `kill_every` seconds (±50%) SIGKILL a random worker that is mid-document, and
    restart it at once.

    Victims are workers whose documents are all on their first attempt: every kill lands
    mid-document, and no document is killed again and again until its attempts run out
    (on a loaded machine a restarted worker may take longer to start than the interval,
    which would otherwise starve big documents; that would measure the harness, not Sheaf).
    Kills stop once everything is uploaded and nothing is queued any more.
    """
    rng = random.Random(args.seed)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.kill_every * rng.uniform(0.5, 1.5))
        victims: list[int] = []
        while not stop.is_set():
            report.restarts += fleet.revive_dead()
            fresh, backlog = await asyncio.to_thread(first_attempt_holders, dsn)
            victims = [n for n in range(len(fleet.workers)) if fleet.worker_id(n) in fresh]
            if victims and (backlog or not report.uploads_done):
                break
            await asyncio.sleep(0.1)
        if stop.is_set():
            return
        await asyncio.to_thread(fleet.kill_and_restart, rng.choice(victims))
        report.kills += 1
        report.restarts += 1


async def cut_database(
    args: argparse.Namespace, dsn: str, report: Report, stop: asyncio.Event
) -> None:
    """Once, `cut_after` seconds in: terminate every connection to the database."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.cut_after)
    if not stop.is_set():
        report.connections_terminated = await asyncio.to_thread(terminate_connections, dsn)
        print(f"terminated {report.connections_terminated} database connections", flush=True)


async def restart_bus(
    bus: BusProcess, args: argparse.Namespace, report: Report, stop: asyncio.Event, t0: float
) -> None:
    """Once, `bus_restart_after` seconds in: stop the emulator, wait `bus_down`, start it.

    Messages and locks survive, as they survive a Service Bus outage; connections do not.
    """
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.bus_restart_after)
    if stop.is_set():
        return
    before = await asyncio.to_thread(bus.command, "stop")
    down = time.monotonic()
    report.messages_completed_before_restart = before["completed"]
    print(f"Service Bus emulator stopped at {down - t0:.0f} s: {before}", flush=True)
    await asyncio.sleep(args.bus_down)  # even past `stop`: never leave it stopped
    await asyncio.to_thread(bus.command, "start")
    report.bus_down_seconds = time.monotonic() - down
    report.bus_restarted_at = time.monotonic() - t0
    report.bus_restarts += 1
    print(f"Service Bus emulator started again after {report.bus_down_seconds:.1f} s", flush=True)


def first_attempt_holders(dsn: str) -> tuple[set[str], int]:
    """Workers holding live leases only on first attempts, and how many documents are
    queued (the harness's aim, not the checker's evidence). Nothing while the database
    cannot answer: the harness's own connection is cut with all the others."""
    try:
        return _first_attempt_holders(dsn)
    except psycopg2.OperationalError:
        return set(), 0


def _first_attempt_holders(dsn: str) -> tuple[set[str], int]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT lease_owner FROM documents "
            "WHERE status = 'processing' AND lease_expires_at > clock_timestamp() "
            "GROUP BY lease_owner HAVING max(attempts) = 1"
        )
        holders = {row[0] for row in cur.fetchall()}
        cur.execute("SELECT count(*) FROM documents WHERE status = 'queued'")
        row = cur.fetchone()
        return holders, int(row[0]) if row else 0


def terminate_connections(dsn: str) -> int:
    """Kill every backend of the chaos database except our own."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0


async def settle(base: str, args: argparse.Namespace, report: Report) -> None:
    """Wait until every uploaded document is completed or failed (or the timeout)."""
    deadline = time.monotonic() + args.timeout
    last_print = 0.0
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            now = await counts(session, base)
            if now is None:
                await asyncio.sleep(1)
                continue
            pending = now.get("queued", 0) + now.get("processing", 0)
            if time.monotonic() - last_print > 10:
                print(f"status {now} kills={report.kills}", flush=True)
                last_print = time.monotonic()
            if pending == 0 and sum(now.values()) >= report.documents:
                return
            await asyncio.sleep(0.5)
    print("settle timeout: documents still pending", flush=True)


async def run(args: argparse.Namespace, url: str, dsn: str, workdir: Path) -> Report:
    report = Report(documents=args.documents, bus=args.bus)
    port, bus_port, *worker_ports = free_ports(2 + args.workers)
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHEAF_")}
    env.update(TIMERS)
    env.update(
        SHEAF_DATABASE_URL=url,
        SHEAF_BLOB_DIR=str(workdir / "blobs"),
        SHEAF_PORT=str(port),
        SHEAF_CONCURRENCY=str(args.concurrency),
        SHEAF_EMBEDDER="lexical",
        PYTHONPATH=str(ROOT),
    )
    with contextlib.ExitStack() as stack:
        bus = None
        if args.bus == "servicebus":
            log = stack.enter_context((workdir / "servicebus.log").open("ab"))
            bus = BusProcess(ROOT, log, args.bus_lock_seconds, bus_port)
            stack.callback(bus.close)
            env.update(BUS_TIMERS)
            env.update(
                SHEAF_MESSAGE_BUS="servicebus",
                SHEAF_SERVICEBUS_CONNECTION_STRING=bus.connection_string,
                SHEAF_SERVICEBUS_QUEUE=bus.queue,
            )
        fleet = Fleet(env, workdir, port, worker_ports)
        stack.callback(fleet.stop)
        await under_chaos(fleet, bus, base, args, dsn, report)
        fleet.stop()
        if bus is not None:
            await read_bus(bus, report)
            report.polling_fallbacks = count_in_logs(workdir, FALLBACK_EVENT)
    return report


async def under_chaos(
    fleet: Fleet,
    bus: BusProcess | None,
    base: str,
    args: argparse.Namespace,
    dsn: str,
    report: Report,
) -> None:
    """Upload and settle while workers are killed, the database cut and the bus restarted."""
    stop = asyncio.Event()
    started = time.monotonic()

    def clock() -> float:
        return time.monotonic() - started

    await wait_ready(base)
    lives = [(fleet.api_life, "api"), *((life, "workers") for life in fleet.lives)]
    side = [
        *(watch(life, report.healthz[kind], stop, clock) for life, kind in lives),
        chaos(fleet, args, dsn, report, stop),
        cut_database(args, dsn, report, stop),
    ]
    if bus is not None:
        side.append(restart_bus(bus, args, report, stop, started))
    tasks = [asyncio.create_task(guarded(job, report)) for job in side]
    try:
        await upload_all(base, args, report)
        report.upload_seconds = clock()
        await settle(base, args, report)
        report.settle_seconds = clock() - report.upload_seconds
        if bus is not None:
            await drain(bus, args, report)
            report.drain_seconds = clock() - report.upload_seconds - report.settle_seconds
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        report.total_seconds = clock()


async def guarded(job: Coroutine[Any, Any, None], report: Report) -> None:
    """Run a side task; if it crashes, say so at once and fail the run at the end (a run
    whose kills stopped half-way must not pass for a run under chaos)."""
    name = getattr(job, "__name__", "side task")
    try:
        await job
    except Exception as exc:
        report.harness_errors.append(f"{name}: {exc!r}")
        print(f"HARNESS ERROR in {name}:", flush=True)
        traceback.print_exc()


async def drain(bus: BusProcess, args: argparse.Namespace, report: Report) -> None:
    """With every document settled, wait for the queue to empty: messages of killed
    workers come back when their locks expire and must be settled too (or dead-lettered,
    which the checker would see)."""
    deadline = time.monotonic() + 2 * args.bus_lock_seconds + 60
    while time.monotonic() < deadline:
        stats = await asyncio.to_thread(bus.command, "stats")
        if stats["running"] and stats["active"] == stats["locked"] == stats["scheduled"] == 0:
            return
        await asyncio.sleep(1)
    print(f"the queue did not drain: {stats}", flush=True)


async def read_bus(bus: BusProcess, report: Report) -> None:
    """After the run: what is left in the queue, and every dead-lettered message."""
    stats = await asyncio.to_thread(bus.command, "stats")
    report.messages_completed = stats["completed"]
    report.queue_left = {k: stats[k] for k in ("active", "scheduled", "locked", "dead_letter")}
    report.dead_letters = await dead_letters(bus.connection_string, bus.queue)


FALLBACK_EVENT = "Service Bus unreachable; polling the database meanwhile"  # worker.runner


def count_in_logs(workdir: Path, event: str) -> int:
    """How often the workers logged `event` (what they did, as they tell it)."""
    return sum(
        path.read_text(errors="replace").count(f'"event": "{event}"')
        for path in workdir.glob("worker-*.log")
    )


async def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the API at {base} did not become ready")


def free_ports(count: int, low: int = 20000, high: int = 32768) -> list[int]:
    """`count` distinct free ports, below the kernel's ephemeral range (32768 and up here).

    All are held open until every one is chosen: asking the kernel for port 0 once per
    port can give the same port twice, and two workers on one metrics port kept killing
    each other (exit 1, "address in use"). Ports outside the ephemeral range also stay free
    while a killed worker restarts: an outgoing connection cannot take one meanwhile.
    """
    held: list[socket.socket] = []
    try:
        for port in random.sample(range(low, high), high - low):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            if len(held) == count:
                return [int(s.getsockname()[1]) for s in held]
        raise RuntimeError(f"fewer than {count} free ports in {low}-{high}")
    finally:
        for sock in held:
            sock.close()


@contextlib.contextmanager
def fresh_database(admin_dsn: str, keep: bool) -> Any:
    """A new empty database, dropped afterwards unless `keep`; yields its libpq DSN."""
    name = f"sheaf_chaos_{uuid.uuid4().hex[:10]}"
    with contextlib.closing(psycopg2.connect(admin_dsn)) as admin:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
        finally:
            if not keep:
                with admin.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2, help="documents per worker")
    parser.add_argument("--kill-every", type=float, default=3.0, help="mean seconds")
    parser.add_argument("--cut-after", type=float, default=10.0, help="seconds before the DB cut")
    parser.add_argument("--scale", type=float, default=1.0, help="document size factor")
    parser.add_argument("--upload-rate", type=float, default=0.0, help="per second; 0: at once")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--bus", choices=["none", "servicebus"], default="none", help="wake-ups: polling or SB"
    )
    parser.add_argument(
        "--bus-restart-after", type=float, default=30.0, help="seconds before the SB restart"
    )
    parser.add_argument(
        "--bus-down",
        type=float,
        default=10.0,
        help="seconds SB stays down (longer than the SDK's own ~6 s of retries, so that "
        "workers notice and poll)",
    )
    parser.add_argument("--bus-lock-seconds", type=float, default=10.0, help="SB lock duration")
    parser.add_argument(
        "--min-retried", type=float, default=0.2, help="share with attempts >= 2 to pass"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to settle")
    parser.add_argument("--database-url", help="postgresql+asyncpg://... of an empty database")
    parser.add_argument("--admin-dsn", default=ADMIN_DSN, help="where to create a fresh one")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the harness report here")
    parser.add_argument("--workdir", type=Path, help="keep blobs and process logs here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.database_url:
            url = args.database_url
            dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        else:
            dsn = stack.enter_context(fresh_database(args.admin_dsn, args.keep_database))
            url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="sheaf-chaos-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        upgrade(url)  # outside any event loop: migrations run their own
        report = asyncio.run(run(args, url, dsn, workdir))
        print_report(args, report)
        if args.json:
            args.json.write_text(json.dumps(report.as_json(), indent=2))
        checker = [sys.executable, "-m", "tests.chaos.check", "--dsn", dsn]
        checker += ["--min-retried", str(args.min_retried)]
        if args.bus == "servicebus":
            letters = workdir / "dead-letters.json"
            letters.write_text(json.dumps(report.dead_letters, indent=2))
            checker += ["--dead-letters", str(letters)]
        verdict = subprocess.run(checker, cwd=ROOT, check=False).returncode
        if report.harness_errors:
            print(f"FAIL: the harness itself failed: {report.harness_errors}", flush=True)
            return 2
        return verdict


def print_report(args: argparse.Namespace, report: Report) -> None:
    statuses = Counter(report.upload_statuses.values())
    api, workers = report.healthz["api"], report.healthz["workers"]
    rows: list[tuple[str, object]] = [
        ("wake-ups", "Service Bus (emulator)" if args.bus == "servicebus" else "polling"),
        ("workers x concurrency", f"{args.workers} x {args.concurrency}"),
        (
            "documents sent",
            f"{report.documents} (202 new: {statuses[202]}, 200 duplicate: {statuses[200]}, "
            f"requests retried: {report.upload_retries})",
        ),
        ("workers SIGKILLed", report.kills),
        ("worker restarts", report.restarts),
        ("DB connections terminated", report.connections_terminated),
        ("API /healthz ok / failed", f"{api.ok} / {api.failed}"),
        (
            "workers /healthz ok / failed",
            f"{workers.ok} / {workers.failed} (excused: {workers.excused}, killed or starting)",
        ),
    ]
    if args.bus == "servicebus":
        restarted = report.bus_restarted_at or 0.0
        rows += [
            (
                "Service Bus restarts",
                f"{report.bus_restarts} (down {report.bus_down_seconds:.1f} s, "
                f"up again at {restarted:.0f} s)",
            ),
            (
                "messages completed",
                f"{report.messages_completed} "
                f"({report.messages_completed_before_restart} before the restart)",
            ),
            ("worker fallbacks to polling", f"{report.polling_fallbacks} (from their logs)"),
            ("left in the queue", ", ".join(f"{k} {v}" for k, v in report.queue_left.items())),
            ("queue drain after settling", f"{report.drain_seconds:.1f} s"),
        ]
    rows += [
        ("upload phase", f"{report.upload_seconds:.1f} s"),
        ("settle phase", f"{report.settle_seconds:.1f} s"),
        ("total", f"{report.total_seconds:.1f} s"),
    ]
    print("\nHarness: what was done to the system")
    for label, value in rows:
        print(f"  {label:<28} {value}")
    for example in api.examples + workers.examples:
        print(f"  ! /healthz failed: {example}")
    for error in report.harness_errors:
        print(f"  ! harness error: {error}")
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
