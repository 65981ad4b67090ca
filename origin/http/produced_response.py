"""The response for a segment produced for this request alone (the cache off or bypassed).

A produced segment (``packaging.segments.ProtectedSegment``) lies in pooled buffers as
its parts in wire order: the rebuilt ``moof`` as bytes, the encrypted ``mdat`` as a view
of the buffer it was read and encrypted in.  Joining them, or handing them to the
transport, would copy the whole body once more in user space and leave unknown when the
buffers are free again.

Rules:

- a plain ``GET`` of the whole body: 200 with the headers ``respond_bytes`` would give;
  the status line and headers aiohttp serialised, then the parts, by ``writev`` on the
  socket (``origin.http.socket_sendfile.writev_to_socket``: one call, as nginx sends a
  head and its file together), and the buffers go back to their pool the moment the
  last byte is in the kernel;
- a body holds its buffers, and its place among the ``IN_FLIGHT`` bodies a process has
  on their way out (``origin.http.segment_cache``: production waits for a place, so
  memory is bounded however slowly clients read), until its bytes are in the kernel; a
  client that leaves the socket full for ``DETACH_AFTER`` seconds gets the rest from a
  copy in a mapping of its own (unmapped when sent), and the buffers and the place go
  back at once: slow readers cannot hold the pool;
- under TLS (the bytes must pass through the TLS layer) the body is joined, the buffers
  given back, and the bytes written through the transport;
- ``HEAD``, and a response whose body is never written (the connection went first),
  give the buffers back without sending them; so does an error mid-send.
"""

from __future__ import annotations

import logging
import os

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from origin.http.socket_sendfile import (
    Unsupported,
    copy_out,
    socket_descriptor,
    writev_to_socket,
)
from origin.packaging.buffer_pool import Lease
from origin.packaging.segments import ProtectedSegment

log = logging.getLogger("origin.http")

DETACH_AFTER = 0.5


class ProducedResponse(web.StreamResponse):
    """200 with a produced segment's parts, written from its buffers (module rules)."""

    # aiohttp's own switch (``web.Response`` turns it off too): keep the serialised head
    # until the body goes, so that one writev carries both.
    _send_headers_immediately = False

    def __init__(self, segment: ProtectedSegment, *, content_type: str,
                 headers: dict[str, str]) -> None:
        super().__init__(status=200, headers=headers)
        self.content_type = content_type
        self.content_length = segment.size
        self._segment: ProtectedSegment | None = segment
        self._method = hdrs.METH_GET
        self._writer: AbstractStreamWriter | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self._method = request.method
        try:
            self._writer = await super().prepare(request)
        except BaseException:
            self._give_back()
            raise
        return self._writer

    async def write_eof(self, data: bytes = b"") -> None:
        segment, self._segment = self._segment, None
        writer = self._writer
        try:
            if segment is not None and writer is not None and self._method != hdrs.METH_HEAD:
                await self._send(segment, writer)
        finally:
            if segment is not None:
                segment.release()
        await super().write_eof(data)

    def _give_back(self) -> None:
        segment, self._segment = self._segment, None
        if segment is not None:
            segment.release()

    async def _send(self, segment: ProtectedSegment, writer: AbstractStreamWriter) -> None:
        transport = writer.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        try:
            fd = socket_descriptor(transport)
        except Unsupported:
            writer.send_headers()
            await writer.write(segment.take_bytes())
            return
        head = take_unsent_headers(writer)
        if head is None:  # aiohttp did not hold them back: they go first, through it
            os.close(fd)
            writer.send_headers()
            try:
                fd = socket_descriptor(transport)  # their bytes are in the kernel first
            except Unsupported:
                await writer.write(segment.take_bytes())
                return
            head = b""

        copies: list[Lease] = []

        def detach(pending: list[memoryview]) -> list[memoryview]:
            copy, rest = copy_out(pending)
            copies.append(copy)
            segment.release()
            log.debug("slow reader: %d bytes of %s copied out of the pooled buffers",
                      len(rest), segment.etag)
            return [rest]

        try:
            sent = await writev_to_socket(fd, (head, *segment.parts), detach=detach,
                                          detach_after=DETACH_AFTER)
        finally:
            os.close(fd)
            for copy in copies:
                copy.release()
        writer.output_size += sent
        if writer.length is not None:
            writer.length -= sent - len(head)


def take_unsent_headers(writer: AbstractStreamWriter) -> bytes | None:
    """The status line and headers aiohttp serialised and holds back to send with the
    first body bytes (``StreamWriter._headers_buf``), taken and marked sent so the
    caller's own write carries them; None when they are not there (another aiohttp
    version)."""
    held = getattr(writer, "_headers_buf", None)
    if not isinstance(held, bytes) or getattr(writer, "_headers_written", True):
        return None
    writer._headers_buf = None  # type: ignore[attr-defined]  # aiohttp's own field
    writer._headers_written = True  # type: ignore[attr-defined]
    return held
