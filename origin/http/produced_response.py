"""The response for a segment produced for this request alone (the cache off or bypassed).

A produced segment (``packaging.segments.ProtectedSegment``) lies in pooled buffers as
its parts in wire order: the rebuilt ``moof`` as bytes, the encrypted ``mdat`` as a view
of the buffer it was read and encrypted in.  Joining them, or handing them to the
transport, would copy the whole body once more in user space and leave unknown when the
buffers are free again.

Rules:

- a plain ``GET`` of the whole body: 200 with the headers ``respond_bytes`` would give;
  the headers go through aiohttp, then the parts by ``writev`` on the socket
  (``origin.http.socket_sendfile.writev_to_transport``), and the buffers go back to
  their pool the moment the last byte is in the kernel;
- a client that leaves the socket full for ``DETACH_AFTER`` seconds gets the rest from
  a copy, and the buffers go back at once: slow readers cannot hold the pool;
- under TLS (the bytes must pass through the TLS layer) the body is joined, the buffers
  given back, and the bytes written through the transport;
- ``HEAD``, and a response whose body is never written (the connection went first),
  give the buffers back without sending them; so does an error mid-send.
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from origin.http.socket_sendfile import Unsupported, writev_to_transport
from origin.packaging.segments import ProtectedSegment

log = logging.getLogger("origin.http")

DETACH_AFTER = 0.05


class ProducedResponse(web.StreamResponse):
    """200 with a produced segment's parts, written from its buffers (module rules)."""

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
        writer.send_headers()
        transport = writer.transport
        if transport is None:
            raise ConnectionResetError("connection lost")

        def detach(pending: list[memoryview]) -> list[memoryview]:
            copy = memoryview(b"".join(pending))
            segment.release()
            log.debug("slow reader: %d bytes of %s copied out of the pooled buffers",
                      len(copy), segment.etag)
            return [copy]

        try:
            sent = await writev_to_transport(transport, segment.parts, detach=detach,
                                             detach_after=DETACH_AFTER)
        except Unsupported:
            await writer.write(segment.take_bytes())
            return
        writer.output_size += sent
        if writer.length is not None:
            writer.length -= sent
