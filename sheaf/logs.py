"""Logging: JSON lines for machines, short text lines for people on a terminal.

Every line carries `timestamp`, `level`, `logger` and `event` (the message), then its
context fields. Context comes from three places, later ones winning:

- the process: `stamp(worker_id=...)` (called by the worker at start) puts `worker_id` on
  every line a worker process writes, whichever module or thread logs it;
- the task: `bound(document_id=..., collection=..., attempt=..., lease=...)` stamps every
  line logged while a document is processed, including lines from adapters that know
  nothing about documents (asyncio tasks and `to_thread` inherit it);
- the call: `log.info("...", extra={...})`.

Field names used across Sheaf: `document_id`, `collection`, `attempt`, `worker_id`,
`lease` (the first 8 characters of the fencing token: enough to tell attempts apart,
useless to forge a write), `duration_seconds`, `error_code`, `error`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from sheaf.config import Settings

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_PROCESS: dict[str, object] = {}
_BOUND: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar("sheaf_log")


def stamp(**fields: object) -> None:
    """Add `fields` to every line this process logs from now on."""
    _PROCESS.update(fields)


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Add `fields` to every line logged by this task (and tasks it starts) inside."""
    token = _BOUND.set({**_BOUND.get({}), **fields})
    try:
        yield
    finally:
        _BOUND.reset(token)


class ContextFilter(logging.Filter):
    """Stamps the process's and the task's fields on a record; explicit extras win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in {**_PROCESS, **_BOUND.get({})}.items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_extra(record),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in _extra(record).items())
        line = f"{time} {record.levelname:<7} {record.getMessage()}" + (
            f"  {fields}" if fields else ""
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(settings: Settings) -> None:
    """Log every line to stderr, as JSON unless a person is watching (SHEAF_LOG_FORMAT)."""
    handler = logging.StreamHandler(sys.stderr)
    as_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The Azure SDKs log every AMQP link and HTTP request at INFO: useful to debug them,
    # noise otherwise. Their warnings and errors always show.
    if settings.log_level != "DEBUG":
        logging.getLogger("azure").setLevel(logging.WARNING)
