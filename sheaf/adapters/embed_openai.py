"""Embeddings from Azure OpenAI or any OpenAI-compatible endpoint (vLLM, Ollama, TEI, …).

One adapter, `OpenAIEmbedder`, around an `openai` async client; two factories build that
client: `azure_openai_embedder` (Entra ID token from an injected credential, or a key) and
`openai_compatible_embedder` (a base URL, optionally a key). What callers may rely on:

- **Order and shape.** One unit-length vector of `dimensions` floats per text, in input
  order (the API's `index`, not its response order, decides). A blank text gets the zero
  vector without a request, as in the lexical embedder: it has no direction, and the API
  refuses empty input.
- **Batching.** Texts go out in requests of at most `max_batch_inputs` inputs and at most
  `max_request_tokens` estimated tokens, up to `max_concurrency` requests in flight.
- **Token estimate.** Tokens are estimated, not counted: ceil(UTF-8 bytes / 3) by default
  (`bytes_per_token`). BPE tokens of English, other Latin-script and Cyrillic text average
  about 4 bytes, so the estimate errs high; it can err low for scripts the tokenizer
  handles poorly (Devanagari, Thai), where `bytes_per_token=1` is a strict bound (every
  byte-level BPE token covers at least one byte). tiktoken would count exactly but is not
  a dependency, and its tokenizer files are downloaded at first use.
- **Long inputs are split, never truncated.** A text over `max_input_tokens` is cut at
  whitespace into pieces that fit; each piece is embedded and the piece vectors are
  averaged, weighted by their estimated tokens, and re-normalised. Every character of
  the text counts towards its vector, but a long text's vector is an average: it
  describes the whole less sharply than a text that fits.
- **Retries are ours.** The SDK's retries are off (`max_retries=0`) so that one loop
  decides, counts and logs every try. Errors map to Sheaf's tree as follows:

      429                       retried after `retry-after-ms`, else `retry-after` (seconds
                                or a date), plus up to 10% (so clients told the same moment
                                do not all come back at it). Such waits are the quota at
                                work, not failures: they do not count as tries, only their
                                sum is bounded (`max_throttled_seconds`). Given up at once
                                when the server asks for a wait longer than
                                `max_retry_after_seconds`; a 429 without a wait is a failed
                                try (backoff, `max_attempts`)  → TransientError embedding_throttled
      5xx, 408, 409, timeout,   retried with exponential backoff and jitter
      connection error          → TransientError embedding_unavailable
      401, 403, token failure   not retried here  → TransientError embedding_auth
      404                       not retried here  → TransientError embedding_misconfigured
      other 4xx (400, 422, …)   → PermanentError embedding_rejected, with the API's message
      wrong vector length,      not retried here  → TransientError embedding_bad_response
      malformed answer

  Auth failures and 404s (no such deployment or model) are the operator's problem, not
  the document's: they are transient so that fixing the role assignment or the setting
  lets the documents through, instead of failing every document meanwhile.
- **`model` names the vector space**: `azure-openai:<deployment>:<dimensions>` or
  `openai:<model>:<dimensions>`. Chunks record it and search never mixes models, so
  changing the deployment or the dimensions starts a new space.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import openai
from azure.core.exceptions import AzureError
from azure.identity.aio import get_bearer_token_provider
from openai.types import CreateEmbeddingResponse

from sheaf import metrics
from sheaf.domain.retry import retry_delay
from sheaf.errors import ConfigError, PermanentError, SheafError, TransientError

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

log = logging.getLogger(__name__)

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
OPENAI_USER_ROLE = "Cognitive Services OpenAI User"
_NO_KEY = "unused"  # self-hosted servers without auth: the SDK insists on some key
_SEGMENT = re.compile(r"\s*\S+|\s+")  # a word with the whitespace before it; trailing space

Vector = tuple[float, ...]


@dataclass(frozen=True, slots=True)
class EmbeddingLimits:
    """Request sizes, concurrency and retry policy; defaults fit Azure OpenAI's limits."""

    max_batch_inputs: int = 2048  # the API's limit per request
    max_request_tokens: int = 300_000  # the API's limit per request, summed over inputs
    max_input_tokens: int = 8191  # per input, for text-embedding-3 and ada-002
    bytes_per_token: float = 3.0  # see "Token estimate" in the module docstring
    max_concurrency: int = 4
    max_attempts: int = 6  # tries per request, the first included
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    max_retry_after_seconds: float = 60.0  # a 429 asking for longer gives up at once
    max_throttled_seconds: float = 300.0  # all the waits 429s asked for, per request
    timeout_seconds: float = 60.0  # per request

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be positive"
            for name in (
                "max_batch_inputs",
                "max_request_tokens",
                "max_input_tokens",
                "bytes_per_token",
                "max_concurrency",
                "max_attempts",
                "timeout_seconds",
                "max_throttled_seconds",
            )
            if getattr(self, name) <= 0
        ]
        if self.max_batch_inputs > 2048:
            problems.append("max_batch_inputs must be at most 2048 (the API's limit)")
        if self.max_input_tokens * self.bytes_per_token < 4:
            problems.append(
                "max_input_tokens * bytes_per_token must be at least 4 (bytes of one character)"
            )
        if self.max_input_tokens > self.max_request_tokens:
            problems.append("max_input_tokens must not exceed max_request_tokens")
        if problems:
            raise ConfigError("invalid embedding limits: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class _Piece:
    """A text, or one piece of a long one, as sent to the API."""

    owner: int  # index of the caller's text
    text: str
    tokens: int


class OpenAIEmbedder:
    """The `Embedder` port over an OpenAI-style embeddings API; see the module docstring.

    Takes ownership of `client` (closed by `close`). `deployment` is what the API calls
    the model: an Azure deployment name or a model id.
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        deployment: str,
        model: str,
        dimensions: int,
        limits: EmbeddingLimits | None = None,
        request_dimensions: bool = True,
    ) -> None:
        if dimensions < 1:
            raise ConfigError(f"embedding dimensions must be positive, got {dimensions}")
        self.model = model
        self.dimensions = dimensions
        self._client = client
        self._deployment = deployment
        self._limits = limits or EmbeddingLimits()
        self._dimensions_param: int | openai.Omit = (
            dimensions if request_dimensions else openai.omit
        )
        self._in_flight = asyncio.Semaphore(self._limits.max_concurrency)

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per text (zero for blank texts), in order."""
        pieces = [piece for owner, text in enumerate(texts) for piece in self._pieces(owner, text)]
        batches = list(self._batches(pieces))
        answers = await _all_or_nothing([self._embed_batch(batch) for batch in batches])
        rows = np.concatenate(answers) if answers else np.empty((0, self.dimensions))
        return self._combine(len(texts), pieces, rows)

    async def close(self) -> None:
        await self._client.close()

    # -- planning --------------------------------------------------------------------

    def _tokens(self, text: str) -> int:
        return math.ceil(_utf8_size(text) / self._limits.bytes_per_token)

    def _pieces(self, owner: int, text: str) -> Iterator[_Piece]:
        if not text.strip():
            return
        limit = self._limits.max_input_tokens
        if self._tokens(text) <= limit:
            yield _Piece(owner, text, self._tokens(text))
            return
        max_bytes = math.floor(limit * self._limits.bytes_per_token)
        for part in split_text(text, max_bytes):
            if part.strip():  # a whitespace-only piece carries nothing to embed
                yield _Piece(owner, part, self._tokens(part))

    def _batches(self, pieces: Sequence[_Piece]) -> Iterator[list[_Piece]]:
        batch: list[_Piece] = []
        tokens = 0
        for piece in pieces:
            full = len(batch) == self._limits.max_batch_inputs
            if batch and (full or tokens + piece.tokens > self._limits.max_request_tokens):
                yield batch
                batch, tokens = [], 0
            batch.append(piece)
            tokens += piece.tokens
        if batch:
            yield batch

    def _combine(self, count: int, pieces: Sequence[_Piece], rows: np.ndarray) -> list[Vector]:
        """Token-weighted sum of each text's piece vectors, normalised; zero rows stay zero.

        The usual case, one piece per text and no blank text, needs no arithmetic: the rows
        are unit vectors already, in the callers' order.
        """
        if len(pieces) == count and all(piece.owner == i for i, piece in enumerate(pieces)):
            return [tuple(row) for row in rows.tolist()]
        owners = np.fromiter((piece.owner for piece in pieces), dtype=np.intp, count=len(pieces))
        weights = np.fromiter((piece.tokens for piece in pieces), np.float64, count=len(pieces))
        matrix = np.zeros((count, self.dimensions), dtype=np.float64)
        np.add.at(matrix, owners, rows * weights[:, None])
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
        return [tuple(row) for row in matrix.tolist()]

    # -- one request, with retries -----------------------------------------------------

    async def _embed_batch(self, batch: Sequence[_Piece]) -> np.ndarray:
        texts = [piece.text for piece in batch]
        attempt = 0  # tries that failed, counted against max_attempts
        throttled = 0.0  # seconds waited because 429s said when to come back
        while True:
            attempt += 1
            try:
                response = await self._send(texts, sum(piece.tokens for piece in batch))
            except openai.APIError as exc:
                error, delay = self._failure(exc, attempt, throttled)
                if delay is None:
                    raise error from exc
                if _told_when(exc):  # the quota at work: a wait, not a failed try
                    attempt -= 1
                    throttled += delay
                log.warning(
                    "embedding request failed; retrying",
                    extra={
                        "model": self.model,
                        "attempt": attempt,
                        "delay": round(delay, 3),
                        "error": f"{type(exc).__name__}: {_api_message(exc)}",
                    },
                )
                await asyncio.sleep(delay)
                continue
            return self._vectors(response, len(texts))

    async def _send(self, texts: list[str], estimated_tokens: int) -> CreateEmbeddingResponse:
        async with self._in_flight:
            started = time.perf_counter()
            result = "error"
            try:
                response = await self._client.embeddings.create(
                    input=texts,
                    model=self._deployment,
                    dimensions=self._dimensions_param,
                    # Asked for explicitly, base64 comes back undecoded: `_vectors` turns
                    # the whole answer into one matrix, without a Python float per value.
                    encoding_format="base64",
                    timeout=self._limits.timeout_seconds,
                )
                result = "ok"
            except openai.RateLimitError:
                result = "throttled"
                metrics.EMBEDDING_THROTTLES.inc()
                raise
            finally:
                metrics.EMBEDDING_REQUESTS.labels(result).inc()
                metrics.EMBEDDING_SECONDS.observe(time.perf_counter() - started)
        usage = getattr(response, "usage", None)  # some self-hosted servers leave it out
        metrics.EMBEDDING_TOKENS.inc(getattr(usage, "total_tokens", None) or estimated_tokens)
        return response

    def _failure(
        self, exc: openai.APIError, attempt: int, throttled: float
    ) -> tuple[SheafError, float | None]:
        """The error to raise for `exc`, and the delay before another try (None: give up)."""
        if isinstance(exc, openai.RateLimitError):
            return self._throttled(exc, attempt, throttled)
        detail = _api_message(exc)
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        if status in (401, 403):
            return TransientError(
                f"{self.model} refused our credentials ({status}): {detail}. With Entra ID, "
                f"grant this identity the '{OPENAI_USER_ROLE}' role on the Azure OpenAI "
                "resource; with a key, check that it belongs to that resource",
                code="embedding_auth",
            ), None
        if status == 404:
            return TransientError(
                f"{self.model}: no such deployment or model at this endpoint (404): {detail}; "
                "check the endpoint, deployment (model) name and API version",
                code="embedding_misconfigured",
            ), None
        if status is not None and status < 500 and status not in (408, 409):
            message = f"{self.model} rejected the input ({status}): {detail}"
            return PermanentError(message, code="embedding_rejected"), None
        if status is None and not isinstance(exc, openai.APIConnectionError):
            return _bad_response(f"{self.model} sent an answer we cannot read: {detail}"), None
        error = TransientError(
            f"{self.model} is unavailable after {_tries(attempt)}: {detail}",
            code="embedding_unavailable",
        )
        return error, None if attempt >= self._limits.max_attempts else self._backoff(attempt)

    def _throttled(
        self, exc: openai.RateLimitError, attempt: int, throttled: float
    ) -> tuple[SheafError, float | None]:
        """429: wait as long as the server asks (a little more), if that is not too long;
        without a wait named, back off as for any failed try."""
        limits = self._limits
        asked = _server_delay(exc.response.headers)
        if asked is None:
            delay = self._backoff(attempt)
            too_long = False
            give_up = attempt >= limits.max_attempts
        else:
            delay = asked * random.uniform(1.0, 1.1)
            too_long = asked > limits.max_retry_after_seconds
            give_up = too_long or throttled + delay > limits.max_throttled_seconds
        error = TransientError(
            f"{self.model} is rate limited (429) after {_tries(attempt)}"
            + (f" and {throttled:.0f} s of waits it asked for" if throttled else "")
            + (f" and asks us to wait {asked:.0f} s" if too_long else "")
            + f": {_api_message(exc)}; raise the deployment's tokens-per-minute quota or "
            "lower the embedding concurrency",
            code="embedding_throttled",
        )
        return error, None if give_up else delay

    def _backoff(self, attempt: int) -> float:
        limits = self._limits
        return retry_delay(attempt, limits.backoff_base_seconds, limits.backoff_max_seconds)

    def _vectors(self, response: CreateEmbeddingResponse, count: int) -> np.ndarray:
        """The vectors by `index` as the rows of one matrix, checked for length, normalised."""
        matrix = np.empty((count, self.dimensions), dtype=np.float64)
        seen = np.zeros(count, dtype=bool)
        for item in response.data:
            if not 0 <= item.index < count or seen[item.index]:
                raise _bad_response(f"{self.model} answered with a stray index {item.index}")
            values = _decode(item.embedding, self.model)
            if len(values) != self.dimensions:
                raise _bad_response(
                    f"{self.model} returned {len(values)} dimensions, expected "
                    f"{self.dimensions}: does the deployment's model support that size?"
                )
            matrix[item.index] = values
            seen[item.index] = True
        if not seen.all():
            missing = np.flatnonzero(~seen)[:5].tolist()
            raise _bad_response(f"{self.model} returned no vector for inputs {missing}")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if not (np.isfinite(norms).all() and (norms > 0).all()):
            raise _bad_response(f"{self.model} returned a zero or non-finite vector")
        matrix /= norms
        return matrix


# -- factories -------------------------------------------------------------------------


def azure_openai_embedder(
    endpoint: str,
    deployment: str,
    api_version: str,
    dimensions: int,
    *,
    credential: AsyncTokenCredential | None = None,
    api_key: str | None = None,
    limits: EmbeddingLimits | None = None,
    request_dimensions: bool = True,
) -> OpenAIEmbedder:
    """An embedder for an Azure OpenAI deployment, authenticated by exactly one of:

    - `credential`: an azure-identity async credential (e.g. `DefaultAzureCredential` or
      `ManagedIdentityCredential` from `azure.identity.aio`), owned and closed by the
      caller; its identity needs the "Cognitive Services OpenAI User" role;
    - `api_key`: one of the resource's keys.

    `request_dimensions=False` for models without a `dimensions` parameter (ada-002).
    """
    _require(endpoint=endpoint, deployment=deployment, api_version=api_version)
    api_key = api_key or None  # an empty setting means "not set"
    if (credential is None) == (api_key is None):
        raise ConfigError(
            "Azure OpenAI needs exactly one way to authenticate: an Entra ID credential "
            "(recommended; grant its identity the 'Cognitive Services OpenAI User' role) "
            "or an API key, not " + ("both" if api_key is not None else "neither")
        )
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=endpoint,
        azure_deployment=deployment,
        api_version=api_version,
        api_key=api_key,
        azure_ad_token_provider=None if credential is None else _token_provider(credential),
        max_retries=0,
    )
    return OpenAIEmbedder(
        client,
        deployment=deployment,
        model=f"azure-openai:{deployment}:{dimensions}",
        dimensions=dimensions,
        limits=limits,
        request_dimensions=request_dimensions,
    )


def openai_compatible_embedder(
    base_url: str,
    model: str,
    dimensions: int,
    *,
    api_key: str | None = None,
    limits: EmbeddingLimits | None = None,
    request_dimensions: bool = True,
) -> OpenAIEmbedder:
    """An embedder for any server with OpenAI's `POST {base_url}/embeddings`.

    `base_url` includes the version prefix (`http://host:8000/v1`). Without `api_key` the
    SDK sends a placeholder bearer token, which servers without auth ignore.
    `request_dimensions=False` for models that cannot shorten their vectors.
    """
    _require(base_url=base_url, model=model)
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or _NO_KEY, max_retries=0)
    return OpenAIEmbedder(
        client,
        deployment=model,
        model=f"openai:{model}:{dimensions}",
        dimensions=dimensions,
        limits=limits,
        request_dimensions=request_dimensions,
    )


def _token_provider(credential: AsyncTokenCredential) -> Callable[[], Awaitable[str]]:
    """Bearer tokens for Azure OpenAI; a credential failure becomes `embedding_auth`."""
    provider = get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)

    async def token() -> str:
        try:
            return await provider()
        except AzureError as exc:
            raise TransientError(
                f"could not get an Entra ID token for Azure OpenAI: {exc}", code="embedding_auth"
            ) from exc

    return token


def _require(**settings: str) -> None:
    empty = [name for name, value in settings.items() if not value.strip()]
    if empty:
        raise ConfigError(f"embedder settings must not be empty: {', '.join(empty)}")


# -- helpers ---------------------------------------------------------------------------


def split_text(text: str, max_bytes: int) -> list[str]:
    """Consecutive pieces of at most `max_bytes` UTF-8 bytes that join back into `text`.

    Cuts fall before the whitespace that precedes a word; a word longer than the limit
    is itself cut between characters.
    """
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for segment in _segments(text, max_bytes):
        length = _utf8_size(segment)
        if current and size + length > max_bytes:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(segment)
        size += length
    if current:
        pieces.append("".join(current))
    return pieces


def _segments(text: str, max_bytes: int) -> Iterator[str]:
    for match in _SEGMENT.finditer(text):
        segment = match.group()
        if _utf8_size(segment) <= max_bytes:
            yield segment
            continue
        start, size = 0, 0
        for position, char in enumerate(segment):
            length = _utf8_size(char)
            if size + length > max_bytes:
                yield segment[start:position]
                start, size = position, 0
            size += length
        yield segment[start:]


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _decode(embedding: str | Sequence[float], model: str) -> np.ndarray:
    """base64 of little-endian float32 (what we ask for); a list of floats from servers that
    ignore `encoding_format`."""
    if isinstance(embedding, str):
        try:
            raw = base64.b64decode(embedding, validate=True)
        except binascii.Error as exc:
            raise _bad_response(f"{model} sent an embedding that is not base64: {exc}") from exc
        if len(raw) % 4:
            raise _bad_response(f"{model} sent {len(raw)} bytes, not a float32 vector")
        return np.frombuffer(raw, dtype="<f4")
    try:
        return np.asarray(embedding, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise _bad_response(f"{model} sent an embedding that is not numbers: {exc}") from exc


def _told_when(exc: openai.APIError) -> bool:
    """A 429 that names its wait: the quota says when, no try failed."""
    return isinstance(exc, openai.RateLimitError) and (
        _server_delay(exc.response.headers) is not None
    )


def _server_delay(headers: Mapping[str, str]) -> float | None:
    """Seconds a 429 asks us to wait: `retry-after-ms`, else `retry-after` (seconds or date)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        try:
            seconds = float(value) * scale if value is not None else math.nan
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    try:
        when = parsedate_to_datetime(headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _api_message(exc: openai.APIError) -> str:
    """The API's own words (`error.message`), with the request id support will ask for."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    text = message if isinstance(message, str) and message else exc.message
    request_id = getattr(exc, "request_id", None)
    return f"{text} (request id {request_id})" if request_id else text


def _tries(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


def _bad_response(message: str) -> TransientError:
    return TransientError(message, code="embedding_bad_response")


async def _all_or_nothing(coros: Sequence[Coroutine[Any, Any, np.ndarray]]) -> list[np.ndarray]:
    """Run concurrently; on the first failure cancel the rest and raise that failure."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
