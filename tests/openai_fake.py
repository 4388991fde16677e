"""A fake OpenAI / Azure OpenAI embeddings server on 127.0.0.1, for tests with the real SDK.

It serves `POST /openai/deployments/{deployment}/embeddings?api-version=…` (Azure) and
`POST /v1/embeddings` (OpenAI-compatible) and behaves like the real service where our
adapter depends on it:

- vectors are deterministic (`fake_vector`: seeded by a hash of the text), of the
  requested `dimensions`, as floats or base64 float32 (the SDK asks for base64);
- the answer lists them in shuffled order, each with its `index`;
- it enforces the API's limits with 400s: empty input, more than `max_batch_inputs`
  inputs, an input over `max_input_tokens`, a request over `max_request_tokens`. Its
  "tokenizer" is ceil(UTF-8 bytes / 4), a typical BPE rate for English, so a client that
  estimates more cautiously fits and one that truncates or forgets to split does not;
- every request is recorded (path, query, headers, inputs), and so is the most requests
  it ever had in flight at once;
- with a `Quota`, it enforces tokens and requests per minute as an Azure OpenAI
  deployment does: each is a bucket holding ten seconds' worth that refills
  continuously; a request that does not fit gets 429 with `retry-after-ms` and
  `retry-after` (whole seconds, rounded up) saying when it would, and costs nothing;
- faults are scripted: `fail_next(Fault.throttle(retry_after_ms=…))` makes the next
  request(s) answer that instead. A `slow` fault holds the answer longer than a client
  timeout; `close()` releases held requests so teardown never waits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import web

FAKE_BYTES_PER_TOKEN = 4


def fake_tokens(text: str) -> int:
    """The fake's token count: ceil(UTF-8 bytes / 4)."""
    return math.ceil(len(text.encode("utf-8")) / FAKE_BYTES_PER_TOKEN)


def fake_vector(text: str, dimensions: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The unit vector the fake returns for `text` (before any `scale`)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions)
    return vector / np.linalg.norm(vector)


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted answer in place of a normal one."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""
    delay: float = 0.0  # seconds to hold the request before answering (normally, if 200)

    @classmethod
    def throttle(
        cls, *, retry_after_ms: float | None = None, retry_after: str | None = None
    ) -> Fault:
        headers = {}
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        if retry_after is not None:
            headers["retry-after"] = retry_after
        return cls(
            429, headers, "Requests to the Embeddings_Create Operation have exceeded rate limit"
        )

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls(status, message="The server had an error while processing your request.")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls(delay=seconds)

    @classmethod
    def reject(cls, message: str, status: int = 400) -> Fault:
        return cls(status, message=message)


class Quota:
    """Tokens and requests per minute, as buckets of `burst_seconds`' worth refilled
    continuously (Azure OpenAI enforces its per-minute quota over short windows)."""

    def __init__(
        self, tokens_per_minute: int, requests_per_minute: int, burst_seconds: float = 10.0
    ) -> None:
        self.tokens_per_second = tokens_per_minute / 60
        self.requests_per_second = requests_per_minute / 60
        self._capacity = (
            self.tokens_per_second * burst_seconds,
            self.requests_per_second * burst_seconds,
        )
        self._tokens, self._requests = self._capacity
        self._clock = time.monotonic
        self._updated = self._clock()
        self.granted: list[tuple[float, int]] = []  # (when, tokens) of every request let in
        self.refused = 0

    def take(self, tokens: int) -> float:
        """0 when the request fits (and is charged); else the seconds until it would."""
        now = self._clock()
        elapsed, self._updated = now - self._updated, now
        self._tokens = min(self._capacity[0], self._tokens + elapsed * self.tokens_per_second)
        self._requests = min(self._capacity[1], self._requests + elapsed * self.requests_per_second)
        wait = max(
            (tokens - self._tokens) / self.tokens_per_second,
            (1 - self._requests) / self.requests_per_second,
            0.0,
        )
        if wait > 0:
            self.refused += 1
            return wait
        self._tokens -= tokens
        self._requests -= 1
        self.granted.append((now, tokens))
        return 0.0


@dataclass(slots=True)
class RecordedRequest:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]
    status: int = 0  # what the fake answered; 0 while in flight

    @property
    def inputs(self) -> list[str]:
        value = self.body.get("input")
        return [value] if isinstance(value, str) else list(value or [])


class FakeOpenAI:
    """See the module docstring. Use as `async with FakeOpenAI() as server:`."""

    def __init__(
        self,
        *,
        max_batch_inputs: int = 2048,
        max_input_tokens: int = 8191,
        max_request_tokens: int = 300_000,
        default_dimensions: int = 1536,
        latency: float = 0.0,
        scale: float = 1.0,
        quota: Quota | None = None,
    ) -> None:
        self.quota = quota
        self.max_batch_inputs = max_batch_inputs
        self.max_input_tokens = max_input_tokens
        self.max_request_tokens = max_request_tokens
        self.default_dimensions = default_dimensions
        self.latency = latency  # added to every request, so that concurrency shows
        self.scale = scale  # vectors are multiplied by this: clients must normalise
        self.dimensions_override: int | None = None  # answer with this many, whatever asked
        self.floats_only = False  # ignore `encoding_format`, as some self-hosted servers do
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: deque[Fault] = deque()
        self._closing = asyncio.Event()
        self._rng = random.Random(0)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The Azure endpoint (`azure_endpoint=`); the OpenAI base URL is `url + "/v1"`."""
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, fault: Fault, times: int = 1) -> None:
        self._faults.extend([fault] * times)

    def answered(self) -> list[RecordedRequest]:
        """The requests that got vectors (no scripted fault, within the limits)."""
        return [request for request in self.requests if request.status == 200]

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._azure)
        app.router.add_post("/v1/embeddings", self._openai)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _azure(self, request: web.Request) -> web.Response:
        if "api-version" not in request.query:
            return _error(404, "Resource not found")
        return await self._embeddings(request)

    async def _openai(self, request: web.Request) -> web.Response:
        return await self._embeddings(request)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        recorded = RecordedRequest(
            request.path,
            dict(request.query),
            {name.lower(): value for name, value in request.headers.items()},
            body,
        )
        self.requests.append(recorded)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = await self._respond(recorded)
            recorded.status = response.status
            return response
        finally:
            self.in_flight -= 1

    async def _respond(self, request: RecordedRequest) -> web.Response:
        fault = self._faults.popleft() if self._faults else Fault()
        await self._hold(self.latency + fault.delay)
        if fault.status != 200:
            return _error(fault.status, fault.message, fault.headers)
        refusal = self._refusal(request.inputs)
        if refusal:
            return _error(400, refusal)
        if self.quota is not None:
            wait = self.quota.take(sum(fake_tokens(text) for text in request.inputs))
            if wait > 0:
                throttle = Fault.throttle(retry_after_ms=round(wait * 1000, 1))
                throttle.headers["retry-after"] = str(math.ceil(wait))
                return _error(429, throttle.message, throttle.headers)
        return web.json_response(self._answer(request))

    async def _hold(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    def _refusal(self, inputs: list[str]) -> str | None:
        if not inputs or any(text == "" for text in inputs):
            return "'$.input' is invalid. Please check the API reference."
        if len(inputs) > self.max_batch_inputs:
            return f"Too many inputs. The max number of inputs is {self.max_batch_inputs}."
        for position, text in enumerate(inputs):
            if fake_tokens(text) > self.max_input_tokens:
                return (
                    f"This model's maximum context length is {self.max_input_tokens} tokens, "
                    f"however you requested {fake_tokens(text)} tokens (input {position})."
                )
        total = sum(fake_tokens(text) for text in inputs)
        if total > self.max_request_tokens:
            return f"Requested {total} tokens, max {self.max_request_tokens} tokens per request"
        return None

    def _answer(self, request: RecordedRequest) -> dict[str, Any]:
        asked = request.body.get("dimensions") or self.default_dimensions
        dimensions = self.dimensions_override or asked
        as_base64 = request.body.get("encoding_format") == "base64" and not self.floats_only
        data = []
        for index, text in enumerate(request.inputs):
            vector = fake_vector(text, dimensions) * self.scale
            encoded: Any = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode()
                if as_base64
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        self._shuffle(data)
        tokens = sum(fake_tokens(text) for text in request.inputs)
        return {
            "object": "list",
            "data": data,
            "model": str(request.body.get("model")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _shuffle(self, data: list[dict[str, Any]]) -> None:
        """Never the identity order when there are two or more items."""
        self._rng.shuffle(data)
        if len(data) > 1 and all(item["index"] == i for i, item in enumerate(data)):
            data.append(data.pop(0))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": str(status)}}
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={**(headers or {}), "x-request-id": f"req-{status}"},
    )


@pytest.fixture(name="openai_fake")
async def openai_fake_fixture() -> AsyncIterator[FakeOpenAI]:
    """A running fake with the API's default limits; tweak its attributes per test."""
    async with FakeOpenAI() as server:
        yield server
