"""The Dockerfile's promises that can be checked without a Docker engine.

No image is built here (no engine runs in CI; deploy/check.sh lints the file and builds
its wheel). What can run is checked by running it: the HEALTHCHECK's Python program is
taken out of the Dockerfile and pointed at a real HTTP server on loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> dict[str, str]:
    """Stage name -> its instructions."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", DOCKERFILE, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def healthcheck_program() -> str:
    found = re.search(r"^HEALTHCHECK .*?\\\n\s+CMD (\[.*\])$", DOCKERFILE, re.M)
    assert found, "the Dockerfile has no exec-form HEALTHCHECK"
    command = json.loads(found[1])
    assert command[:2] == ["python", "-c"]
    return str(command[2])


class Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    Health.status = 200


def run_healthcheck(api_port: int, worker_port: int) -> int:
    env = {"SHEAF_PORT": str(api_port), "SHEAF_WORKER_METRICS_PORT": str(worker_port)}
    program = healthcheck_program()
    return subprocess.run([sys.executable, "-c", program], env=env, timeout=30).returncode


def free_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    port = server.server_address[1]
    server.server_close()
    return port


def test_healthcheck_passes_on_the_api_port(health_server: ThreadingHTTPServer) -> None:
    assert run_healthcheck(health_server.server_address[1], 0) == 0


def test_healthcheck_passes_on_the_worker_port(health_server: ThreadingHTTPServer) -> None:
    assert run_healthcheck(free_port(), health_server.server_address[1]) == 0


def test_healthcheck_fails_when_healthz_says_503(health_server: ThreadingHTTPServer) -> None:
    Health.status = 503
    assert run_healthcheck(health_server.server_address[1], 0) == 1


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert run_healthcheck(free_port(), 0) == 1


def test_runtime_stage_is_slim_non_root_and_has_the_odbc_driver() -> None:
    runtime = stages()["runtime"]
    instructions = "\n".join(
        line for line in runtime.splitlines() if not line.lstrip().startswith("#")
    )
    assert "msodbcsql18" in instructions
    assert "ACCEPT_EULA=Y" in instructions
    assert not re.search(r"build-essential|gcc|\bcurl\b|gnupg|unixodbc-dev", instructions)
    user = re.search(r"^USER (\S+)$", runtime, re.M)
    assert user
    assert not user[1].startswith(("0", "root"))
    assert re.search(r'^ENTRYPOINT \["tini", "--", "sheaf"\]$', runtime, re.M)
    assert re.search(r'^CMD \["api"\]$', runtime, re.M)
    assert "org.opencontainers.image.source" in runtime


def test_every_stage_starts_from_the_same_slim_python() -> None:
    bases = set(re.findall(r"^FROM\s+(\S+)\s+AS", DOCKERFILE, re.M))
    assert len(bases) == 1
    (base,) = bases
    assert re.fullmatch(r"python:3\.11-slim-\w+", base)


def test_the_build_context_keeps_only_what_the_wheel_needs() -> None:
    kept = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = set(re.findall(r"^COPY (?!--from)(.+?) \S+$", stages()["builder"], re.M))
    sources = {name for line in copied for name in line.split()}
    assert sources <= kept, "the builder copies something .dockerignore leaves out"
    assert "sql" in sources, "the wheel force-includes sql/ as sheaf/_sql"
