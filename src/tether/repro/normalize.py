"""Comparing outputs "apart from embedded timestamps": a digest of a file's content with
the metadata its format stamps on every save left out.

Many writers embed the time of writing (PDF ``/CreationDate``, PNG ``tIME`` and text
chunks, ZIP member times, the gzip header's mtime), so a perfectly reproduced result
differs in a few bytes. ``content_digest`` reads the format from the file's first bytes
and hashes what remains; formats it does not know give ``None`` and are judged by bytes
alone. Runs set ``SOURCE_DATE_EPOCH`` (see ``runs/launch.py``), which most writers
honour, so this is the second line of defence, not the first.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zipfile
from pathlib import Path

MAX_BYTES = 512 << 20  # larger files are judged by bytes only

_PDF_DATES = re.compile(
    rb"/(?:CreationDate|ModDate)\s*\([^)]*\)"
    rb"|/ID\s*\[\s*<[0-9A-Fa-f]*>\s*<[0-9A-Fa-f]*>\s*\]"
    rb"|<xmp:(?:CreateDate|ModifyDate|MetadataDate)>[^<]*</xmp:(?:CreateDate|ModifyDate|MetadataDate)>"
    rb"|<xmpMM:(?:DocumentID|InstanceID)>[^<]*</xmpMM:(?:DocumentID|InstanceID)>"
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_METADATA = {b"tIME", b"tEXt", b"zTXt", b"iTXt", b"eXIf"}


def content_digest(path: Path) -> tuple[str, str] | None:
    """(format, digest of the content without its timestamps), or None when the format
    is not one that embeds them, or the file cannot be read as that format."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    try:
        if data.startswith(b"%PDF-"):
            return "pdf", _sha(_PDF_DATES.sub(b"", data))
        if data.startswith(_PNG_SIGNATURE):
            return "png", _sha(b"".join(_png_chunks(data)))
        if data.startswith(b"PK\x03\x04"):
            return "zip", _zip_digest(path)
        if data.startswith(b"\x1f\x8b") and len(data) > 10:
            return "gzip", _sha(data[:4] + b"\0\0\0\0" + data[8:])  # MTIME is bytes 4-7
    except (ValueError, zipfile.BadZipFile, struct.error, OSError):
        return None
    return None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png_chunks(data: bytes) -> list[bytes]:
    kept = []
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind not in _PNG_METADATA:
            kept.append(data[pos:end])
        pos = end
    return kept


def _zip_digest(path: Path) -> str:
    """Member names, sizes and CRCs: the content, without member times or order."""
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as z:
        for info in sorted(z.infolist(), key=lambda i: i.filename):
            h.update(f"{info.filename}\0{info.file_size}\0{info.CRC}\n".encode())
    return h.hexdigest()
