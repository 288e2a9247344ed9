"""A streaming multipart/form-data reader for document uploads: the file part goes straight
to disk in chunks and the upload stops (413) as soon as the file or the whole body passes its
size limit, so a huge body is never held in memory or written out in full."""

from __future__ import annotations

import hashlib
import mimetypes
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import orjson
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from cxkit.fields import NUL_REFUSED, has_nul
from cxkit.http.problems import PayloadTooLarge, ProblemError, Unprocessable, UnsupportedMediaType, field_problem

FILE_FIELD = "file"
TEXT_FIELDS = ("customer_id", "deal_id", "description")
MAX_TEXT_LENGTH = 10_000
"""Characters a text field holds at most (the OpenAPI document's maxLength)."""
# Read before decoding, a text part is cut off at the most bytes MAX_TEXT_LENGTH characters take
# in UTF-8 (4 each); its length in characters is checked once decoded.
_MAX_TEXT_BYTES = 4 * MAX_TEXT_LENGTH
# What a body may hold besides the file: the text parts and every part's headers and boundary.
_ENVELOPE_BYTES = 64 * 1024


@dataclass
class ParsedUpload:
    incoming: Path
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    content_type: str | None = None
    size: int = 0
    sha256: str = ""
    request_digest: str = ""


def clean_filename(raw: str) -> str:
    """The last path component, without control characters, at most 255 characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().strip(".")
    return name[:255] or "document"


class _Reader:
    def __init__(self, target: BinaryIO, max_bytes: int, allowed_types: set[str], too_large: str) -> None:
        self.target = target
        self.max_bytes = max_bytes
        self.too_large = too_large
        self.allowed_types = allowed_types
        self.result_fields: dict[str, str] = {}
        self.filename: str | None = None
        self.content_type: str | None = None
        self.size = 0
        self.file_hash = hashlib.sha256()
        self.pending: list[bytes] = []
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._part: str | None = None  # "file", a text field name, or None (ignored part)
        self._text = bytearray()
        self._seen_file = False
        self.ended = False  # the closing boundary was read

    def too_long(self) -> Unprocessable:
        return field_problem(
            ["body", str(self._part)], f"String should have at most {MAX_TEXT_LENGTH} characters", "string_too_long"
        )

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._part = None
        self._text = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD and b"filename" in options:
            if self._seen_file:
                raise Unprocessable("send one file per upload")
            self._seen_file = True
            self.filename = clean_filename(options[b"filename"].decode("utf-8", "replace"))
            declared = self._headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            if not declared or declared == "application/octet-stream":
                declared = (mimetypes.guess_type(self.filename)[0] or "application/octet-stream").lower()
            if declared not in self.allowed_types:
                # Refused on the part's headers, before its bytes are read.
                raise UnsupportedMediaType(
                    f"content type {declared!r} is not accepted; accepted: {', '.join(sorted(self.allowed_types))}"
                )
            self.content_type = declared
            self._part = FILE_FIELD
        elif name in TEXT_FIELDS:
            self._part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part == FILE_FIELD:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(self.too_large)
            self.file_hash.update(chunk)
            self.pending.append(chunk)
        elif self._part is not None:
            if len(self._text) + len(chunk) > _MAX_TEXT_BYTES:
                raise self.too_long()
            self._text.extend(chunk)

    def on_part_end(self) -> None:
        if self._part in TEXT_FIELDS:
            try:
                text = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise Unprocessable(f"{self._part} is not UTF-8 text") from None
            if len(text) > MAX_TEXT_LENGTH:
                raise self.too_long()
            # PostgreSQL text cannot hold NUL: refused as InputModel refuses it in a JSON body.
            if has_nul(text):
                raise field_problem(["body", self._part], NUL_REFUSED)
            self.result_fields[self._part] = text

    def on_end(self) -> None:
        self.ended = True


async def receive_upload(
    request: Request, incoming: Path, max_bytes: int, allowed_types: list[str], *, what: str = "document"
) -> ParsedUpload:
    """Read the request body into `incoming` (the file part) and the text fields. Raises a
    problem (413, 415, 422) as soon as the upload cannot be accepted, naming the upload as
    `what` ("document", "import file"); the caller removes `incoming` in every case it does
    not keep it."""
    too_large = f"{what}s are at most {max_bytes} bytes"
    # The whole body is capped, whatever its framing: the body cap of cxkit.http.body_limit is
    # lifted for upload routes, and a part that is not the file counts here as much as the file.
    max_body = max_bytes + _ENVELOPE_BYTES
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise UnsupportedMediaType(f"send the {what} as multipart/form-data with a `file` part")
    boundary = params.get(b"boundary")
    if not boundary:
        raise Unprocessable("multipart body without boundary")
    declared_length = request.headers.get("content-length")
    if (
        declared_length
        and declared_length.isascii()
        and declared_length.isdigit()
        and (len(declared_length) > 18 or int(declared_length) > max_body)
    ):
        raise PayloadTooLarge(too_large)

    with incoming.open("wb") as target:
        reader = _Reader(target, max_bytes, {t.lower() for t in allowed_types}, too_large)
        try:
            parser = MultipartParser(boundary, reader.callbacks())
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_body:  # a chunked body (a declared length was checked above)
                    raise PayloadTooLarge(too_large)
                parser.write(chunk)
                if reader.pending:
                    data, reader.pending = b"".join(reader.pending), []
                    await anyio.to_thread.run_sync(target.write, data)
            parser.finalize()
        except ProblemError:
            raise
        except FormParserError as exc:
            raise Unprocessable(f"malformed multipart body: {exc}") from None
    if not reader.ended:
        # python_multipart's finalize() does not check this: a body cut short would be taken
        # as it is, its file truncated.
        raise Unprocessable("malformed multipart body: it ends before its closing boundary")
    if reader.filename is None:
        raise Unprocessable(
            "the upload has no file", errors=[{"loc": ["body", FILE_FIELD], "msg": "Field required", "type": "missing"}]
        )
    if reader.size == 0:
        raise Unprocessable("the file is empty")
    sha256 = reader.file_hash.hexdigest()
    # What the request means, not its bytes: a retry's multipart boundary may differ.
    meaning = orjson.dumps(
        [request.method, request.url.path, reader.result_fields, reader.filename, reader.content_type, sha256],
        option=orjson.OPT_SORT_KEYS,
    )
    return ParsedUpload(
        incoming=incoming,
        fields=reader.result_fields,
        filename=reader.filename,
        content_type=reader.content_type,
        size=reader.size,
        sha256=sha256,
        request_digest=hashlib.sha256(meaning).hexdigest(),
    )
