"""Checks every Office Open XML package (DOCX, PPTX, XLSX) passes before a parser opens it.

python-docx, python-pptx and openpyxl read parts fully into memory, so a zip bomb would be
inflated before any of our code sees a word (bad-inputs.md #14, #34). The central
directory states every entry's size up front; `check_sizes` refuses the file from those
numbers alone. Python's zipfile never inflates a member past its declared size (it stops
there and the CRC check fails), so a directory that lies about sizes cannot get past the
limits either. `main_content_type` reads only the small `[Content_Types].xml`, and
`refuse_doctypes` only the first bytes of each XML part: Office never writes a DOCTYPE,
so a part that declares one (entity expansion, external entities: #15, #34) is refused
before any XML parser sees it.

Error codes: `zip_bomb` (too many entries, too much uncompressed data, or an entry that
compresses implausibly well) and `unsafe_xml` (a part declares a DOCTYPE or entities);
`check_package` adds the format's own `corrupt_*` (not a readable zip, a CRC mismatch)
and `not_*` (another kind of package, or the macro-enabled variant).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from sheaf.errors import ExtractionError

CONTENT_TYPES = "[Content_Types].xml"
_RATIO_FLOOR_BYTES = 1024 * 1024  # below this an entry's ratio cannot hurt anyone
_MAX_CONTENT_TYPES_BYTES = 1024 * 1024
_PROLOG_BYTES = 64 * 1024  # a DOCTYPE must come before the root element, so near the start
_XML_SUFFIXES = (".xml", ".rels", ".vml")
_DOCTYPE_MARKERS = tuple(
    marker.encode(encoding)
    for marker in ("<!DOCTYPE", "<!ENTITY")
    for encoding in ("utf-8", "utf-16-le", "utf-16-be")
)


@dataclass(frozen=True, slots=True)
class ZipLimits:
    """What an Office package may declare before Sheaf refuses to open it."""

    max_uncompressed_bytes: int = 200 * 1024 * 1024
    max_ratio: float = 100.0
    max_entries: int = 10_000


@dataclass(frozen=True, slots=True)
class OfficeFormat:
    """What tells one kind of Office package from the others, and how to name it."""

    kind: str  # "PPTX"
    application: str  # "PowerPoint": what the user opens the file with
    main_type: bytes  # content type of the main part
    macro_type: bytes  # ... of the macro-enabled variant, which Sheaf refuses
    corrupt_code: str
    wrong_code: str

    def corrupt(self, exc: Exception) -> ExtractionError:
        return ExtractionError(
            f"The {self.kind} is damaged and cannot be read ({type(exc).__name__}: "
            f"{str(exc)[:200]}). Open it in {self.application}, save a new copy, and "
            "upload that.",
            code=self.corrupt_code,
        )

    def wrong(self, why: str) -> ExtractionError:
        return ExtractionError(
            f"The file is not a {self.application} {self.kind} document: {why}.",
            code=self.wrong_code,
        )


def check_package(path: Path, limits: ZipLimits, office: OfficeFormat) -> None:
    """Refuse bombs, broken zips, DOCTYPEs and packages of another kind before parsing."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_sizes(archive.infolist(), limits, office.kind)
            declared = content_types(archive)
            if declared is None:
                raise office.wrong(f"it is a ZIP archive without a plausible {CONTENT_TYPES}")
            if office.macro_type in declared:
                raise office.wrong("it is the macro-enabled variant; save it without macros")
            if office.main_type not in declared:
                raise office.wrong("it is an Office file of another kind")
            refuse_doctypes(archive, office.kind)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise office.corrupt(exc) from exc


def check_sizes(entries: list[zipfile.ZipInfo], limits: ZipLimits, kind: str) -> None:
    """Refuse a package whose directory declares too much; `kind` names it ("DOCX")."""
    if len(entries) > limits.max_entries:
        raise _bomb(kind, f"it has {len(entries)} entries (limit {limits.max_entries})")
    total = sum(entry.file_size for entry in entries)
    if total > limits.max_uncompressed_bytes:
        raise _bomb(kind, f"it unpacks to {total} bytes (limit {limits.max_uncompressed_bytes})")
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > _RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
            raise _bomb(
                kind,
                f"entry {entry.filename!r} expands {ratio:.0f} times (limit {limits.max_ratio:g})",
            )


def content_types(archive: zipfile.ZipFile) -> bytes | None:
    """The package's `[Content_Types].xml`, or None when it has none or an absurd one."""
    try:
        info = archive.getinfo(CONTENT_TYPES)
    except KeyError:
        return None
    if info.file_size > _MAX_CONTENT_TYPES_BYTES:
        return None
    return archive.read(info)


def refuse_doctypes(archive: zipfile.ZipFile, kind: str) -> None:
    """Refuse the package if any XML part declares a DOCTYPE (entities live there)."""
    for entry in archive.infolist():
        if not entry.filename.lower().endswith(_XML_SUFFIXES):
            continue
        with archive.open(entry) as part:
            prolog = part.read(_PROLOG_BYTES)
        if any(marker in prolog for marker in _DOCTYPE_MARKERS):
            raise ExtractionError(
                f"The {kind} was refused: its part {entry.filename!r} declares a DOCTYPE or "
                "XML entities, which Office never writes (entity expansion or external "
                "entities). Open it in Office, save a new copy, and upload that.",
                code="unsafe_xml",
            )


def _bomb(kind: str, why: str) -> ExtractionError:
    return ExtractionError(
        f"The {kind} was refused as a possible zip bomb: {why}.", code="zip_bomb"
    )
