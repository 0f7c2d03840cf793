"""An HTTP/1.1 response read as it arrives: the status line and headers, then a body (chunked,
of a Content-Length, or up to the end of the connection) cut into lines.

A runtime's event stream is one response that never ends, so it cannot be read with
``http.client`` under a timeout (a timeout mid-read leaves its buffers undefined) nor block a
thread that must stop on SIGTERM. This reader is fed whatever bytes a non-blocking socket had,
and says what lines are complete; the caller polls the socket with its own deadlines.

    reader = ResponseReader()
    for line in reader.feed(sock.recv(65536)): ...
    reader.status  # None until the headers are complete
"""

from __future__ import annotations

MAX_HEAD = 64 * 1024  # status line and headers
MAX_LINE = 1024 * 1024  # one event; podman's are a few hundred bytes


class StreamError(Exception):
    """The bytes are not an HTTP/1.1 response this reader can follow."""


class ResponseReader:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.ended = False  # the body is complete (a chunked body's last chunk, or its length)
        self._buf = bytearray()  # bytes not yet parsed
        self._line = bytearray()  # the body's current, incomplete line
        self._chunked = False
        self._left: int | None = None  # bytes left in the current chunk (or the whole body)
        self._trailer = False  # after the last chunk: the trailer section until an empty line

    @property
    def head_done(self) -> bool:
        return self.status is not None

    def feed(self, data: bytes) -> list[bytes]:
        """The body lines completed by ``data`` (without their newline; empty lines dropped).
        Raises StreamError on a malformed response."""
        self._buf += data
        body = bytearray()
        if self.status is None and not self._head():
            return []
        while self._buf and not self.ended:
            if not self._chunked:
                take = len(self._buf) if self._left is None else min(self._left, len(self._buf))
                body += self._buf[:take]
                del self._buf[:take]
                if self._left is not None:
                    self._left -= take
                    self.ended = self._left == 0
                continue
            if self._trailer:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    break
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                self.ended = line == b""
                continue
            if self._left is None:  # a chunk's size line
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 1024:
                        raise StreamError("a chunk size line is too long")
                    break
                size_text = bytes(self._buf[:end]).split(b";", 1)[0].strip()
                del self._buf[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise StreamError(f"a chunk size is not hexadecimal: {size_text!r}") from None
                if size == 0:
                    self._trailer = True
                    continue
                self._left = size + 2  # the data and its CRLF
                continue
            take = min(self._left, len(self._buf))
            data_part = min(take, max(0, self._left - 2))  # the data, never its CRLF
            body += self._buf[:data_part]
            del self._buf[:take]
            self._left -= take
            if self._left == 0:
                self._left = None
        return self._lines(body)

    def _head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise StreamError(f"no end of the headers within {MAX_HEAD} bytes")
            return False
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise StreamError(f"not an HTTP/1.1 response: {head[0][:80]!r}")
        for line in head[1:]:
            key, sep, value = line.partition(":")
            if sep:
                self.headers[key.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in self.headers:
            try:
                self._left = int(self.headers["content-length"])
            except ValueError:
                raise StreamError("a Content-Length that is not a number") from None
            self.ended = self._left == 0
        self.status = int(parts[1])
        return True

    def _lines(self, body: bytearray) -> list[bytes]:
        self._line += body
        *lines, rest = bytes(self._line).split(b"\n")
        if len(rest) > MAX_LINE:
            raise StreamError(f"a line of the body is over {MAX_LINE} bytes")
        self._line = bytearray(rest)
        if self.ended and rest.strip():
            lines.append(rest)  # the last line of a finite body needs no newline
            self._line = bytearray()
        return [line.strip() for line in lines if line.strip()]

    def pending(self) -> bytes:
        """The body's incomplete last line so far (an error answer's message, say)."""
        return bytes(self._line)
