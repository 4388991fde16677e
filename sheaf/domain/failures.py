"""Which failures a retry can mend.

A retry runs the same bytes through the same pipeline. When the file itself is the
problem (a password, no text layer, a damaged or mislabelled file, a zip bomb), every
retry fails the same way, so Sheaf does not offer one: the document's `links.retry` is
left out and the console shows no Retry button. Other permanent failures (a misconfigured
embedder, a size limit an operator may raise) and every transient one can succeed later.
`POST /v1/documents/{id}/retry` still accepts any failed document, for the operator who
knows better.
"""

from __future__ import annotations

from sheaf.domain.models import Document, Status

FILE_FAULTS = frozenset(
    {
        "encrypted",
        "no_text",
        "not_a_pdf",
        "corrupt_pdf",
        "not_a_docx",
        "corrupt_docx",
        "zip_bomb",
        "not_a_pptx",
        "corrupt_pptx",
        "not_an_xlsx",
        "corrupt_xlsx",
        "unsafe_xml",
        "corrupt_html",
        "corrupt_image",
        "unsupported_type",
        "blob_missing",  # the upload is gone: only a new upload can help
    }
)


def retry_can_help(document: Document) -> bool:
    """A failed document whose failure was not the file's own."""
    return document.status is Status.FAILED and document.error_code not in FILE_FAULTS
