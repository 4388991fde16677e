"""`sheaf up` with no metrics settings: each worker serves its stage timings on a port of
its own, listed at start; stderr is one JSON line per record; each warning comes once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Proc, upload, wait_status
from tests.e2e.console_support import sheaf_up

pytestmark = pytest.mark.e2e

STAGE_COUNT = re.compile(r'^sheaf_stage_duration_seconds_count\{stage="extract"\} (\S+)$', re.M)


async def test_worker_metrics_are_served_and_listed_without_settings(
    tmp_path: Path, procs: list[Proc], http: aiohttp.ClientSession
) -> None:
    url = await sheaf_up(tmp_path, procs, SHEAF_WORKERS="2")  # SHEAF_LOG_FORMAT=json
    status, body = await upload(http, url, "m", "a.txt", b"metrics under sheaf up " * 20)
    assert status == 202, body
    await wait_status(http, url, body["id"], {"completed"})

    records = [json.loads(line) for line in (tmp_path / "up.log").read_text().splitlines()]
    listed = [r for r in records if r["event"] == "worker metrics"]
    assert len(listed) == 1, listed
    urls = listed[0]["urls"]
    port = int(url.rsplit(":", 1)[1])
    assert len(urls) == 2
    assert all(u.startswith("http://127.0.0.1:") and u.endswith("/metrics") for u in urls)
    assert port not in [int(u.split(":")[2].split("/")[0]) for u in urls]
    extracted = 0.0
    for metrics_url in urls:
        async with http.get(metrics_url) as response:
            assert response.status == 200
            found = STAGE_COUNT.search(await response.text())
            extracted += float(found.group(1)) if found else 0.0
    assert extracted == 1.0  # one document, extracted by one of the two workers

    assert [r["event"] for r in records].count("Sheaf is up; Ctrl-C stops it") == 1
    warnings = [r for r in records if "authentication is off" in r["event"]]
    assert len(warnings) == 1, warnings
