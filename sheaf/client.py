"""A small HTTP client of Sheaf's `/v1` API, used by the CLI's user commands.

It talks to a running API (`SHEAF_API_URL`, default http://127.0.0.1:8000) rather than to
the database, so the CLI works the same against a laptop and against AKS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from sheaf.errors import SheafError


class ApiError(SheafError):
    """The API answered with an error (or could not be reached)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


class Client:
    def __init__(
        self, base_url: str, timeout: float = 300.0, *, api_key: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout), headers=headers
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        url = f"{self.base_url}{path}"
        try:
            async with self._session.request(method, url, **kwargs) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientConnectionError as exc:
            raise ApiError(
                0,
                "unreachable",
                f"cannot reach the Sheaf API at {self.base_url} ({exc}); start it with "
                "`sheaf up`, or point SHEAF_API_URL at a running one",
            ) from exc
        try:
            body: dict[str, Any] = json.loads(text) if text else {}
        except json.JSONDecodeError:
            body = {"error": {"code": "not_json", "message": text[:200]}}
        if status >= 400:
            error = body.get("error", {})
            raise ApiError(status, error.get("code", "http_error"), error.get("message", text))
        return status, body

    async def upload(self, collection: str, path: Path) -> tuple[int, dict[str, Any]]:
        with path.open("rb") as handle:
            form = aiohttp.FormData()
            form.add_field("file", handle, filename=path.name)
            return await self.request("POST", f"/v1/collections/{collection}/documents", data=form)

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        clean = {k: str(v) for k, v in params.items() if v is not None}
        return (await self.request("GET", path, params=clean))[1]

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if body is None:
            return (await self.request("POST", path))[1]
        return (await self.request("POST", path, json=body))[1]


def expand_paths(paths: list[Path]) -> Iterator[Path]:
    """Files as given, and every regular file under given folders (sorted, no hidden)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden:
                    yield child
        else:
            yield path
