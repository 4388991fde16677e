"""Authentication end to end: `sheaf up` with keys, the CLI's keys and user commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Proc, free_port, sheaf_env, start, wait_ready

pytestmark = pytest.mark.e2e

SHEAF = [sys.executable, "-m", "sheaf"]


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHEAF, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", ["api", "up"])
def test_no_auth_beyond_loopback_refuses_to_start(tmp_path: Path, command: str) -> None:
    result = cli(sheaf_env(), tmp_path, command, "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
    assert "SHEAF_AUTH_MODE=keys" in result.stderr
    assert not (tmp_path / ".sheaf").exists()  # refused before migrating anything


async def test_loopback_without_auth_says_so(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    assert cli(sheaf_env(), tmp_path, "db", "upgrade").returncode == 0
    proc = start(procs, [*SHEAF[1:], "api", "--port", str(port)], sheaf_env(), tmp_path, "api")
    await wait_ready(f"http://127.0.0.1:{port}", proc)
    assert "authentication is off (SHEAF_AUTH_MODE=none)" in proc.log.read_text()


async def test_keys_from_the_cli_open_the_api_until_revoked(
    tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = sheaf_env(SHEAF_AUTH_MODE="keys", SHEAF_WORKERS="1", SHEAF_API_URL=url)
    proc = start(procs, [*SHEAF[1:], "up", "--port", str(port)], env, tmp_path, "up")
    await wait_ready(url, proc)
    assert "authentication is off" not in proc.output()

    made = cli(env, tmp_path, "keys", "create", "--name", "e2e", "--scope", "write")
    assert made.returncode == 2  # --collection is required: no accidental all-access key
    create = ["keys", "create", "--name", "e2e", "--scope", "write", "--collection", "legal"]
    made = cli(env, tmp_path, *create)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = key[len("sk_sheaf_") :][:16]

    refused = cli(env, tmp_path, "search", "minutes", "-c", "legal")
    assert refused.returncode == 1
    assert "no credentials" in refused.stderr

    (tmp_path / "minutes.txt").write_text("Minutes of the legal review, second session.")
    keyed = {**env, "SHEAF_API_KEY": key}
    uploaded = cli(keyed, tmp_path, "upload", str(tmp_path / "minutes.txt"), "-c", "legal")
    assert uploaded.returncode == 0, uploaded.stderr
    elsewhere = cli(keyed, tmp_path, "upload", str(tmp_path / "minutes.txt"), "-c", "hr")
    assert elsewhere.returncode == 1
    assert "(not_found)" in elsewhere.stderr
    found = cli(env, tmp_path, "--api-key", key, "search", "legal review", "-c", "legal")
    assert found.returncode == 0, found.stderr
    stats = cli(keyed, tmp_path, "status")
    assert stats.returncode == 1  # cross-collection: admin only
    assert "lacks the admin scope" in stats.stderr

    assert cli(env, tmp_path, "keys", "revoke", key_id).returncode == 0
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {key}"}
        async with http.get(f"{url}/v1/collections/legal/documents", headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "unauthenticated"
    listed = cli(env, tmp_path, "keys", "list")
    assert key_id in listed.stdout
    assert "revoked" in listed.stdout
    assert key not in proc.output()  # the server never logged the key
