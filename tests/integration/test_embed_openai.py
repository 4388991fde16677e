"""The OpenAI embedders with the real `openai` SDK, against the fake server in `openai_fake`.

What they prove: both authentication paths reach the wire as Azure expects; requests stay
within the count and token limits; vectors come back unit-length and in input order
whatever order the API answers in; a long input is split (never truncated) into pieces
the server accepts; 429s, 5xx, timeouts and connection failures are retried as promised
and end as the right `TransientError`; a rejected input is a `PermanentError` carrying the
API's words; the concurrency limit holds; the metrics move.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from prometheus_client import REGISTRY

from sheaf.adapters.embed_openai import (
    COGNITIVE_SERVICES_SCOPE,
    EmbeddingLimits,
    OpenAIEmbedder,
    azure_openai_embedder,
    openai_compatible_embedder,
    split_text,
)
from sheaf.errors import ConfigError, PermanentError, TransientError
from sheaf.ports import Embedder
from tests.openai_fake import (
    FakeOpenAI,
    Fault,
    Quota,
    fake_tokens,
    fake_vector,
    openai_fake_fixture,  # noqa: F401 (the `openai_fake` fixture)
)

pytestmark = pytest.mark.integration


DIMS = 64
DEPLOYMENT = "text-embedding-3-large"
API_VERSION = "2024-10-21"
WORDS = ["grain", "silo", "moisture", "audit", "bridge", "pillar", "crack", "revenue"]

Make = Callable[..., OpenAIEmbedder]


class FakeCredential:
    """An azure-identity async credential that hands out a fixed token, or fails."""

    def __init__(self, token: str = "entra-token-1", error: Exception | None = None) -> None:
        self.token = token
        self.error = error
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        if self.error is not None:
            raise self.error
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


def limits(**overrides: Any) -> EmbeddingLimits:
    """Fast retries and a short timeout, so that the retry tests take fractions of a second."""
    settings: dict[str, Any] = {
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        "timeout_seconds": 5.0,
    }
    return EmbeddingLimits(**{**settings, **overrides})


@pytest.fixture
async def azure(openai_fake: FakeOpenAI) -> AsyncIterator[Make]:
    """Builds Azure embedders on the fake (API key unless a credential is given)."""
    made: list[OpenAIEmbedder] = []

    def make(credential: FakeCredential | None = None, **overrides: Any) -> OpenAIEmbedder:
        embedder = azure_openai_embedder(
            openai_fake.url,
            DEPLOYMENT,
            API_VERSION,
            DIMS,
            credential=credential,
            api_key=None if credential else "azure-key-1",
            limits=limits(**overrides),
        )
        made.append(embedder)
        return embedder

    yield make
    for embedder in made:
        await embedder.close()


def sentence(seed: int, words: int = 20) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + f" #{seed}."


def expected(text: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    return fake_vector(text, DIMS)


def assert_vectors(vectors: list[tuple[float, ...]], texts: list[str]) -> None:
    assert len(vectors) == len(texts)
    for vector, text in zip(vectors, texts, strict=True):
        assert len(vector) == DIMS
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-9)
        np.testing.assert_allclose(vector, expected(text), atol=1e-5)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- authentication and addressing -----------------------------------------------------


async def test_azure_with_entra_id_sends_the_credentials_bearer_token(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    credential = FakeCredential("entra-token-1")
    embedder: Embedder = azure(credential)
    texts = [sentence(i) for i in range(5)]

    assert_vectors(await embedder.embed(texts), texts)

    [request] = openai_fake.requests
    assert request.path == f"/openai/deployments/{DEPLOYMENT}/embeddings"
    assert request.query["api-version"] == API_VERSION
    assert request.headers["authorization"] == "Bearer entra-token-1"
    assert "api-key" not in request.headers
    assert request.body["dimensions"] == DIMS
    assert credential.scopes == [(COGNITIVE_SERVICES_SCOPE,)]
    assert embedder.model == f"azure-openai:{DEPLOYMENT}:{DIMS}"
    assert embedder.dimensions == DIMS


async def test_azure_with_an_api_key_sends_the_api_key_header(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    await azure().embed(["hello"])

    [request] = openai_fake.requests
    assert request.headers["api-key"] == "azure-key-1"
    assert "authorization" not in request.headers


async def test_openai_compatible_endpoint(openai_fake: FakeOpenAI) -> None:
    embedder = openai_compatible_embedder(
        openai_fake.url + "/v1", "bge-m3", DIMS, api_key="sk-local", limits=limits()
    )
    try:
        texts = [sentence(i) for i in range(3)]
        assert_vectors(await embedder.embed(texts), texts)
    finally:
        await embedder.close()

    [request] = openai_fake.requests
    assert request.path == "/v1/embeddings"
    assert request.headers["authorization"] == "Bearer sk-local"
    assert request.body["model"] == "bge-m3"
    assert embedder.model == f"openai:bge-m3:{DIMS}"


@pytest.mark.parametrize(
    ("credential", "api_key"), [(None, None), (FakeCredential(), "key")], ids=["neither", "both"]
)
def test_azure_needs_exactly_one_way_to_authenticate(
    credential: FakeCredential | None, api_key: str | None
) -> None:
    with pytest.raises(ConfigError, match="exactly one way to authenticate"):
        azure_openai_embedder(
            "https://x.openai.azure.com", DEPLOYMENT, API_VERSION, DIMS,
            credential=credential, api_key=api_key,
        )  # fmt: skip


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_batch_inputs must be at most 2048"):
        EmbeddingLimits(max_batch_inputs=4096)
    with pytest.raises(ConfigError, match="max_input_tokens must not exceed"):
        EmbeddingLimits(max_input_tokens=10_000, max_request_tokens=5_000)


async def test_an_auth_failure_is_transient_and_names_the_role(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    openai_fake.fail_next(Fault.reject("Principal does not have access", status=401))

    with pytest.raises(TransientError, match="Cognitive Services OpenAI User") as caught:
        await azure(FakeCredential()).embed(["hello"])

    assert caught.value.code == "embedding_auth"
    assert len(openai_fake.requests) == 1  # not retried: the operator has to act


async def test_a_credential_that_cannot_get_a_token_is_an_auth_error(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    credential = FakeCredential(error=ClientAuthenticationError("no managed identity"))

    with pytest.raises(TransientError, match="no managed identity") as caught:
        await azure(credential).embed(["hello"])

    assert caught.value.code == "embedding_auth"
    assert openai_fake.requests == []


async def test_an_unknown_deployment_is_transient_misconfiguration(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    openai_fake.fail_next(Fault.reject("The API deployment for this resource does not exist", 404))

    with pytest.raises(TransientError, match="does not exist") as caught:
        await azure().embed(["hello"])

    assert caught.value.code == "embedding_misconfigured"


# -- batching, order, splitting ----------------------------------------------------------


async def test_batches_by_count(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.max_batch_inputs = 3  # the fake refuses bigger requests
    texts = [sentence(i) for i in range(8)]

    assert_vectors(await azure(max_batch_inputs=3).embed(texts), texts)

    batches = [request.inputs for request in openai_fake.requests]
    assert [len(batch) for batch in batches] == [3, 3, 2]
    assert [text for batch in batches for text in batch] == texts


async def test_batches_by_token_budget(openai_fake: FakeOpenAI, azure: Make) -> None:
    texts = ["x" * 147 + f"{i:03d}" for i in range(5)]  # 150 bytes: 50 estimated tokens each

    assert_vectors(await azure(max_request_tokens=120, max_input_tokens=100).embed(texts), texts)

    assert [len(request.inputs) for request in openai_fake.requests] == [2, 2, 1]


async def test_order_is_the_inputs_not_the_answers(openai_fake: FakeOpenAI, azure: Make) -> None:
    texts = [sentence(i) for i in range(40)]

    vectors = await azure().embed(texts)

    assert_vectors(vectors, texts)  # the fake answers in shuffled order, by index
    assert vectors[0] != vectors[1]


async def test_vectors_are_normalised(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.scale = 3.5

    assert_vectors(await azure().embed(["a", "b"]), ["a", "b"])


async def test_blank_texts_get_the_zero_vector_without_a_request(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    vectors = await azure().embed(["", "words here", "  \n"])

    assert vectors[0] == vectors[2] == (0.0,) * DIMS
    assert_vectors(vectors[1:2], ["words here"])
    assert [request.inputs for request in openai_fake.requests] == [["words here"]]
    assert await azure().embed([]) == []


async def test_a_long_input_is_split_not_truncated(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.max_input_tokens = 50  # the fake refuses inputs over 200 bytes
    text = " ".join(sentence(i, words=12) for i in range(12))  # about 1 KB
    assert fake_tokens(text) > 50

    [vector] = await azure(max_input_tokens=50).embed([text])

    pieces = [piece for request in openai_fake.requests for piece in request.inputs]
    assert len(pieces) > 1
    assert all(fake_tokens(piece) <= 50 for piece in pieces)
    assert "".join(pieces) == text  # every character was embedded, once
    weights = [math.ceil(len(piece.encode()) / 3) for piece in pieces]
    mean = sum(w * expected(piece) for w, piece in zip(weights, pieces, strict=True))
    np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-5)
    assert math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-9)


async def test_the_fake_really_refuses_over_long_inputs(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    """The control for the test above: unsplit, the same text is rejected."""
    openai_fake.max_input_tokens = 50
    text = " ".join(sentence(i, words=12) for i in range(12))

    with pytest.raises(PermanentError, match="maximum context length is 50 tokens"):
        await azure().embed([text])


@pytest.mark.parametrize(
    "text",
    [
        "short",
        "word " * 100,
        "x" * 95 + " tail",
        "ünïcödé wörds ∑ 数学 " * 20,
        "   leading and trailing   ",
        "a" * 50 + "\U0001f600" * 30,
    ],
)
def test_split_text_joins_back_and_fits(text: str) -> None:
    pieces = split_text(text, 32)

    assert "".join(pieces) == text
    assert all(0 < len(piece.encode()) <= 32 for piece in pieces)


# -- retries and errors -------------------------------------------------------------------


async def test_429_honours_retry_after_ms(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.fail_next(Fault.throttle(retry_after_ms=400))
    started = time.perf_counter()

    assert_vectors(await azure().embed(["hello"]), ["hello"])

    elapsed = time.perf_counter() - started
    assert 0.39 <= elapsed < 2.0  # our own backoff would be ~0.01 s
    assert [request.status for request in openai_fake.requests] == [429, 200]


async def test_429_honours_retry_after_seconds(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.fail_next(Fault.throttle(retry_after="1"))
    started = time.perf_counter()

    await azure().embed(["hello"])

    assert 0.99 <= time.perf_counter() - started < 3.0
    assert len(openai_fake.requests) == 2


async def test_429s_that_say_when_are_waits_not_failed_tries(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    """A shared quota may turn a request away many times; each time it says when to come
    back, the request waits (a little more), and no try is counted against it."""
    openai_fake.fail_next(Fault.throttle(retry_after_ms=50), times=5)

    assert_vectors(await azure(max_attempts=2).embed(["hello"]), ["hello"])

    assert [request.status for request in openai_fake.requests] == [429] * 5 + [200]


async def test_waits_for_the_quota_are_bounded_in_sum(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.fail_next(Fault.throttle(retry_after_ms=100), times=10)

    with pytest.raises(TransientError) as caught:
        await azure(max_throttled_seconds=0.35).embed(["hello"])

    assert caught.value.code == "embedding_throttled"
    assert "s of waits it asked for" in caught.value.message
    assert len(openai_fake.requests) <= 4


async def test_a_quota_is_sustained_through_its_429s(openai_fake: FakeOpenAI, azure: Make) -> None:
    """The fake's quota refuses what does not fit and says when it would; the embedder
    waits that long and gets every vector, at the quota's rate and no faster."""
    texts = [sentence(seed, words=60) for seed in range(40)]
    tokens = sum(fake_tokens(text) for text in texts)
    openai_fake.quota = Quota(
        tokens_per_minute=tokens * 60, requests_per_minute=6000, burst_seconds=0.25
    )
    started = time.perf_counter()

    assert_vectors(await azure(max_batch_inputs=4).embed(texts), texts)

    assert 0.7 <= time.perf_counter() - started < 5.0  # a second's worth, a quarter in advance
    assert openai_fake.quota.refused > 0
    assert sum(tokens for _, tokens in openai_fake.quota.granted) == tokens
    assert {request.status for request in openai_fake.requests} == {200, 429}


def test_the_fake_quota_refills_at_its_rate() -> None:
    quota = Quota(tokens_per_minute=600, requests_per_minute=60, burst_seconds=10)
    now = [0.0]
    quota._clock = lambda: now[0]  # a clock the test moves
    quota._updated = 0.0
    assert quota.take(100) == 0  # a full bucket: 100 tokens, 10 requests
    assert quota.take(1) == pytest.approx(0.1)  # 1 token at 10 per second
    now[0] = 2.0
    assert quota.take(20) == 0  # two seconds refilled 20 tokens
    for _ in range(9):
        assert quota.take(0) == 0  # what is left of the ten requests
    assert quota.take(0) == pytest.approx(1.0)  # one request a second
    assert [tokens for _, tokens in quota.granted] == [100, 20] + [0] * 9


async def test_429_asking_too_long_a_wait_gives_up_at_once(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    openai_fake.fail_next(Fault.throttle(retry_after="30"))
    started = time.perf_counter()

    with pytest.raises(TransientError) as caught:
        await azure(max_retry_after_seconds=5).embed(["hello"])

    assert caught.value.code == "embedding_throttled"
    assert time.perf_counter() - started < 1.0
    assert len(openai_fake.requests) == 1


async def test_500_twice_then_success(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.fail_next(Fault.server_error(), times=2)

    assert_vectors(await azure().embed(["hello"]), ["hello"])

    assert [request.status for request in openai_fake.requests] == [500, 500, 200]


async def test_timeout_then_success(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.fail_next(Fault.slow(10.0))
    started = time.perf_counter()

    assert_vectors(await azure(timeout_seconds=0.3).embed(["hello"]), ["hello"])

    assert time.perf_counter() - started < 3.0
    assert len(openai_fake.requests) == 2


async def test_connection_refused_is_unavailable() -> None:
    async with FakeOpenAI() as gone:
        url = gone.url  # a port nobody listens on once the fake has stopped
    embedder = openai_compatible_embedder(url + "/v1", "m", DIMS, limits=limits(max_attempts=2))
    try:
        with pytest.raises(TransientError) as caught:
            await embedder.embed(["hello"])
    finally:
        await embedder.close()
    assert caught.value.code == "embedding_unavailable"


@pytest.mark.parametrize(
    ("fault", "code"),
    [(Fault.server_error(503), "embedding_unavailable"), (Fault.throttle(), "embedding_throttled")],
    ids=["5xx", "429"],
)
async def test_retries_exhausted_is_transient(
    openai_fake: FakeOpenAI, azure: Make, fault: Fault, code: str
) -> None:
    openai_fake.fail_next(fault, times=10)

    with pytest.raises(TransientError) as caught:
        await azure(max_attempts=3).embed(["hello"])

    assert caught.value.code == code
    assert "3 tries" in caught.value.message
    assert len(openai_fake.requests) == 3


async def test_400_is_permanent_with_the_apis_message(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.fail_next(Fault.reject("Input contains invalid characters at position 7"))

    with pytest.raises(PermanentError) as caught:
        await azure().embed(["hello", "world"])

    assert caught.value.code == "embedding_rejected"
    assert "Input contains invalid characters at position 7" in caught.value.message
    assert len(openai_fake.requests) == 1


async def test_wrong_dimensions_from_the_server_is_an_error(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    openai_fake.dimensions_override = DIMS + 1

    with pytest.raises(TransientError, match=f"returned {DIMS + 1} dimensions") as caught:
        await azure().embed(["hello"])

    assert caught.value.code == "embedding_bad_response"


async def test_asks_for_base64_and_reads_floats_from_servers_that_ignore_it(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    texts = [sentence(i) for i in range(5)]
    embedder = azure()
    assert_vectors(await embedder.embed(texts), texts)
    openai_fake.floats_only = True
    assert_vectors(await embedder.embed(texts), texts)

    assert [r.body.get("encoding_format") for r in openai_fake.requests] == ["base64"] * 2


async def test_a_zero_vector_from_the_server_is_an_error(
    openai_fake: FakeOpenAI, azure: Make
) -> None:
    openai_fake.scale = 0.0

    with pytest.raises(TransientError, match="zero or non-finite vector") as caught:
        await azure().embed(["hello", "world"])

    assert caught.value.code == "embedding_bad_response"


async def test_one_failed_batch_fails_the_call(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.latency = 0.05
    openai_fake.fail_next(Fault.reject("bad input"))

    with pytest.raises(PermanentError, match="bad input"):
        await azure(max_batch_inputs=1).embed([sentence(i) for i in range(6)])


# -- concurrency and metrics ------------------------------------------------------------------


async def test_concurrency_limit_holds(openai_fake: FakeOpenAI, azure: Make) -> None:
    openai_fake.latency = 0.1
    texts = [sentence(i) for i in range(8)]

    assert_vectors(await azure(max_batch_inputs=1, max_concurrency=2).embed(texts), texts)

    assert len(openai_fake.requests) == 8
    assert openai_fake.max_in_flight == 2  # parallel, and never more than allowed


async def test_metrics_move(openai_fake: FakeOpenAI, azure: Make) -> None:
    names = {
        "ok": ("sheaf_embedding_requests_total", {"result": "ok"}),
        "throttled": ("sheaf_embedding_requests_total", {"result": "throttled"}),
        "error": ("sheaf_embedding_requests_total", {"result": "error"}),
        "throttles": ("sheaf_embedding_throttles_total", {}),
        "tokens": ("sheaf_embedding_tokens_total", {}),
        "timed": ("sheaf_embedding_request_duration_seconds_count", {}),
    }
    before = {key: sample(name, **labels) for key, (name, labels) in names.items()}
    openai_fake.fail_next(Fault.throttle(retry_after_ms=1))
    openai_fake.fail_next(Fault.server_error())

    await azure().embed(["hello world"])

    moved = {key: sample(name, **labels) - before[key] for key, (name, labels) in names.items()}
    assert moved == {
        "ok": 1,
        "throttled": 1,
        "error": 1,
        "throttles": 1,
        "tokens": fake_tokens("hello world"),  # as the server counted them
        "timed": 3,
    }
