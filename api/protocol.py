"""Errors aiohttp answers before any middleware runs, in the API's JSON envelope.

A request line or header over aiohttp's 8,190-byte limit, too many headers, or bytes that
are not HTTP never reach the application: aiohttp's connection handler answers them
itself, as plain text that quotes the start of the offending line (an `Authorization`
value included) and logs the same text with a traceback. `JsonErrorRunner` serves the app
with a connection handler whose `handle_error` answers `{"error": {"code", "message"}}`
instead, says what to do, and logs only the kind of error, never the bytes.

aiohttp has no public hook for this: the runner rebuilds the server it made with a
subclass whose connections use `JsonErrorProtocol`, reading the server's `_loop` and
`_kwargs`. tests/e2e/test_api_edges.py sends such requests to a real `sheaf up`, so an
aiohttp upgrade that breaks this fails there.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)


def envelope(status: int, exc: BaseException | None) -> tuple[str, str]:
    """(code, message) for an error aiohttp met, without any of the request's bytes."""
    if isinstance(exc, LineTooLong):
        return (
            "request_too_large",
            "The request line or one of its headers is longer than 8,190 bytes. Send "
            "large values in the body instead, and check the Authorization header.",
        )
    if isinstance(exc, BadHttpMethod):
        return "bad_request", "That is not an HTTP request this API understands."
    if isinstance(exc, BadHttpMessage):
        return (
            "bad_request",
            "The request is not valid HTTP (for example too many headers, or a malformed "
            "header line).",
        )
    if status == HTTPStatus.GATEWAY_TIMEOUT:
        return "timeout", "The request took too long; try again."
    return "internal_error", "an unexpected error occurred; it has been logged"


class JsonErrorProtocol(RequestHandler):
    """aiohttp's connection handler, answering its own errors in the JSON envelope."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: the connection is broken
            raise ConnectionError("response already started; cannot send the error")
        code, text = envelope(status, exc)
        if status >= 500:
            log.error("request failed before the application", exc_info=exc)
        else:
            kind = type(exc).__name__ if exc is not None else "unknown"
            log.warning("malformed request refused", extra={"error": kind, "status": status})
        body = json.dumps({"error": {"code": code, "message": text}})
        response = web.Response(status=status, text=body, content_type="application/json")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorProtocol(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer protocol errors in JSON."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _JsonErrorServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
