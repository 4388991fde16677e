"""The errors of authentication and authorisation; all are `ClientError`s (4xx).

    ClientError
    ├── Unauthenticated     401  no credentials, or ones that do not verify
    ├── Forbidden           403  a known caller without the scope the route needs
    └── RateLimited         429  too many uploads by this caller; `retry_after` seconds

Messages say what was wrong and what to do, and never repeat the credential.
"""

from __future__ import annotations

import math

from sheaf.errors import ClientError


class Unauthenticated(ClientError):
    code = "unauthenticated"
    http_status = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="sheaf"'}


class Forbidden(ClientError):
    code = "forbidden"
    http_status = 403


class RateLimited(ClientError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}
