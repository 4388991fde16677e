"""Sheaf's exceptions. Adapters translate SDK errors into these with `raise ... from exc`.

    SheafError
    ├── ConfigError                 settings are invalid; raised at start, never later
    ├── NotFound                    a document (or blob) the caller named does not exist
    │   └── BlobNotFound
    ├── LeaseLost                   the fencing token no longer matches: stop at once
    ├── ClientError                 the caller asked for something invalid: 4xx
    │   ├── Conflict                409, e.g. retrying a document that has not failed
    │   └── RejectedUpload          400, an upload refused before any row exists
    │       ├── UploadTooLarge      413
    │       └── UnsupportedType     415
    ├── TransientError              worth retrying with backoff (network, locks, 5xx, 429)
    │   ├── StoreUnavailable        database or blob store unreachable
    │   └── QueueUnavailable        the message queue (Service Bus) unreachable: poll meanwhile
    └── PermanentError              retrying cannot help: fail the document now
        └── ExtractionError         the file cannot be read (`code` names why)

`TransientError` and `PermanentError` carry a stable `code` that ends up as the
document's `error_code`; the worker chooses retry or failure from the subtree alone.
"""

from __future__ import annotations


class SheafError(Exception):
    code = "sheaf_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(SheafError):
    code = "config_error"


class NotFound(SheafError):
    code = "not_found"


class BlobNotFound(NotFound):
    code = "blob_not_found"


class LeaseLost(SheafError):
    code = "lease_lost"


class ClientError(SheafError):
    code = "bad_request"
    http_status = 400


class Conflict(ClientError):
    code = "conflict"
    http_status = 409


class RejectedUpload(ClientError):
    code = "rejected_upload"


class UploadTooLarge(RejectedUpload):
    code = "upload_too_large"
    http_status = 413


class UnsupportedType(RejectedUpload):
    code = "unsupported_type"
    http_status = 415


class TransientError(SheafError):
    code = "transient_error"


class StoreUnavailable(TransientError):
    code = "store_unavailable"


class QueueUnavailable(TransientError):
    code = "servicebus_unavailable"


class PermanentError(SheafError):
    code = "permanent_error"


class ExtractionError(PermanentError):
    code = "extraction_failed"
