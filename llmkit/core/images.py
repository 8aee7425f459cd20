"""Images given with a message (``Message.images``, image content parts): a URL, a local
file path or base64 data, turned into what a wire format sends."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from pathlib import Path

from llmkit.core.errors import InvalidRequestError

__all__ = ["image_base64", "image_url"]

_URL_SCHEMES = ("http://", "https://", "data:")
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}\s*$")
# Leading bytes of the image formats vision models take.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)
MAX_IMAGE_BYTES = 32 * 1024 * 1024


def _sniff(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return "application/octet-stream"


def _read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise InvalidRequestError(
                f"image file {path} is {size} bytes (the limit is {MAX_IMAGE_BYTES})"
            )
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(f"cannot read image file {path}: {exc.strerror or exc}") from None


def _as_path(value: str) -> Path | None:
    if "\n" in value or len(value) > 4096:
        return None
    path = Path(value).expanduser()
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def _decode_base64(value: str) -> bytes | None:
    if not _BASE64.match(value):
        return None
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def image_url(value: str) -> str:
    """An http(s) or data URL for ``value``: URLs pass as they are, a local file is read
    and sent as a data URL, base64 data becomes a data URL (its type sniffed)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"an image must be a URL, a file path or base64 data, not {value!r:.80}")
    if value.startswith(_URL_SCHEMES):
        return value
    path = _as_path(value)
    if path is not None:
        data = _read_file(path)
        mime = mimetypes.guess_type(path.name)[0] or _sniff(data)
        return f"data:{mime};base64,{base64.b64encode(data).decode()}"
    raw = _decode_base64(value)
    if raw is not None:
        return f"data:{_sniff(raw)};base64,{''.join(value.split())}"
    raise InvalidRequestError(
        f"image {value[:80]!r} is not a URL, an existing file or base64 data"
    )


def image_base64(value: str) -> str:
    """Bare base64 data for ``value`` (the form Ollama's ``images`` take): a file is read,
    a data URL loses its prefix, base64 passes; an http(s) URL cannot be sent this way."""
    if isinstance(value, str):
        m = _DATA_URL.match(value)
        if m:
            return value[m.end():]
        if value.startswith(("http://", "https://")):
            raise InvalidRequestError(
                "this provider takes image data, not URLs: download the image first"
            )
    url = image_url(value)
    return url[url.index(",") + 1:]
