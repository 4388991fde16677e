"""`sheaf dlq` end to end: a configuration error fills the DLQ; fixed, resubmit drains it.

`sheaf up` runs with Service Bus on (the emulator) and the OpenAI embedder pointed at a
path of the fake server that answers 404, so every document fails once its attempts are
spent and is dead-lettered. Restarted with the right URL, `sheaf dlq resubmit` (the CLI,
over HTTP) brings the document to `completed`; the same command again changes nothing.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Proc, get_json, sheaf_env, upload, wait_status
from tests.e2e.test_servicebus import sheaf_up
from tests.openai_fake import FakeOpenAI, openai_fake_fixture  # noqa: F401 (the fixture)
from tests.servicebus_fixtures import ServiceBusEmulator

pytestmark = pytest.mark.e2e

REASON = "embedding_misconfigured"


async def sheaf_cli(url: str, *args: str) -> tuple[int, str]:
    """Run `sheaf ARGS` against the API at `url` without blocking the test's event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sheaf",
        *args,
        env=sheaf_env(SHEAF_API_URL=url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def wait_dead_letters(emulator: ServiceBusEmulator, want: int) -> None:
    for _ in range(80):
        if emulator.counts(emulator.queue_name)["dead_letter"] == want:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"dead-letter count {emulator.counts(emulator.queue_name)}, want {want}")


async def test_fix_the_configuration_then_resubmit_completes_and_a_rerun_is_a_no_op(
    servicebus_emulator: ServiceBusEmulator,
    openai_fake: FakeOpenAI,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    settings = {
        "SHEAF_EMBEDDER": "openai",
        "SHEAF_OPENAI_MODEL": "text-embedding-3-small",
        "SHEAF_MAX_ATTEMPTS": "2",
    }
    url, broken = await sheaf_up(
        servicebus_emulator,
        tmp_path,
        procs,
        SHEAF_OPENAI_BASE_URL=openai_fake.url + "/wrong-path",  # answers 404
        **settings,
    )
    status, body = await upload(http, url, "c", "notes.txt", b"quarterly notes " * 20)
    assert status == 202
    document_id = body["id"]
    failed = await wait_status(http, url, document_id, {"failed"})
    assert failed["error_code"] == REASON
    await wait_dead_letters(servicebus_emulator, 1)

    code, out = await sheaf_cli(url, "dlq", "list")
    assert code == 0, out
    assert REASON in out
    assert document_id in out
    assert "notes.txt" in out
    assert "[failed]" in out
    [message] = (await get_json(http, f"{url}/v1/admin/dlq?reason={REASON}"))["messages"]
    code, out = await sheaf_cli(url, "dlq", "show", str(message["sequence_number"]))
    assert code == 0, out
    assert f'"document_id": "{document_id}"' in out, out
    code, out = await sheaf_cli(url, "dlq", "resubmit", "--reason", REASON, "--dry-run")
    assert code == 0, out
    assert "(dry run)" in out, out
    assert "redriven" in out, out
    assert (await get_json(http, f"{url}/v1/documents/{document_id}"))["status"] == "failed"

    broken.stop()  # fix the configuration: restart with the right base URL
    url, _ = await sheaf_up(
        servicebus_emulator,
        tmp_path,
        procs,
        SHEAF_OPENAI_BASE_URL=openai_fake.url + "/v1",
        **settings,
    )
    code, out = await sheaf_cli(url, "dlq", "resubmit", "--reason", REASON)
    assert code == 0, out
    assert "1 redriven" in out, out
    done = await wait_status(http, url, document_id, {"completed"})
    assert done["chunk_count"] >= 1
    await wait_dead_letters(servicebus_emulator, 0)
    # The queue detects duplicates over 10 minutes, yet the re-drive was delivered: it is
    # a fresh dispatch (`{id}:{seq}` with a bumped seq), never a copy of the failed one.
    assert servicebus_emulator.dropped_duplicates(servicebus_emulator.queue_name) == []

    code, out = await sheaf_cli(url, "dlq", "resubmit", "--reason", REASON)
    assert code == 0, out
    assert "no matching messages" in out, out
    await asyncio.sleep(1.0)  # time for anything a re-run might have set off
    again = await get_json(http, f"{url}/v1/documents/{document_id}")
    assert again["status"] == "completed"
    assert (again["attempts"], again["updated_at"]) == (done["attempts"], done["updated_at"])
    assert servicebus_emulator.counts(servicebus_emulator.queue_name)["dead_letter"] == 0

    code, out = await sheaf_cli(url, "dlq", "list")
    assert code == 0, out
    assert "empty" in out, out
    code, out = await sheaf_cli(url, "dlq", "purge")  # no --yes, no "y" on stdin
    assert code != 0, out
    assert "Aborted" in out, out
    code, out = await sheaf_cli(url, "dlq", "purge", "--yes")
    assert code == 0, out
    assert "no matching messages" in out, out
