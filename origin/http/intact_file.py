"""Clear files sent whole as they were, or visibly cut short: never a mix of two versions.

aiohttp's ``FileResponse`` takes the file's stat, sends the headers (``Content-Length``
and ETag from that stat), then copies the bytes.  A file truncated under it
ends the copy early and the connection stays open, so a keep-alive client waits for bytes
that never come; a file rewritten in place (the same inode) goes out as a body of the full
length mixing old and new bytes under the old ETag.

Rules:

- by default the bytes are read in the default executor, a chunk at a time with
  ``preadv`` at its offset (nothing depends on the file position) into a buffer from a
  pool (``packaging.buffer_pool``: no megabyte allocated per chunk, so memory stays flat
  however many downloads run), and written from it by ``writev`` on the socket
  (``origin.http.socket_sendfile``): what is in flight is the kernel's copy, and the
  buffer goes back once its bytes are in the kernel (after a copy, if the client leaves
  the socket full for ``DETACH_AFTER``); under TLS the chunk is copied through the
  transport;
- with ``zero_copy`` (files origin writes once and only ever replaces by rename: the
  disk tier of the cache), all but the last chunk go out with ``sendfile(2)`` straight
  into the socket (``origin.http.socket_sendfile``), copying where it cannot be used
  (TLS, bytes still buffered in the transport).  Not for media files: the socket
  buffers then hold the page cache's pages, not copies, so a file rewritten or cut in
  place would change bytes already counted as sent (nginx's sendfile has this flaw);
- the last chunk (``CHECKED_TAIL`` bytes with ``zero_copy``) is read in the executor
  together with an ``fstat`` of the open file, in the same job and after the read: if
  the size or mtime differ from the stat the headers were made from, or any earlier
  part came back short, that chunk is not sent and the connection is closed — the
  client sees fewer bytes than ``Content-Length``, never the whole length.  Every
  write that changes bytes moves the mtime first, so a change at any time before that
  ``fstat`` is seen (within the kernel's timestamp tick; an mtime set back with
  ``utime`` is not, as for the ETag).  Not the ctime: the rename that replaces the
  file moves the old inode's;
- a file replaced by rename keeps its old inode open here, so the download completes
  with the old bytes, as its ETag says;
- writes wait for the transport as aiohttp's own copy does; ranges, HEAD, 304 and 416
  are aiohttp's (and ``origin.http.file_ranges``'s) as before.

It overrides two private methods of aiohttp's ``FileResponse`` (3.14): ``_prepare_open_file``
(to keep the stat) and ``_sendfile``; ``tests/test_faults.py`` and ``tests/test_cache.py``
fail if they stop meaning that.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from dataclasses import dataclass
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.typedefs import LooseHeaders, PathLike

from origin.http.file_ranges import RangeCheckedFileResponse
from origin.http.socket_sendfile import (
    Unsupported,
    copy_out,
    sendfile_to_transport,
    socket_descriptor,
    writev_to_socket,
)
from origin.packaging.buffer_pool import BufferPool, Lease

log = logging.getLogger("origin.http")

CHECKED_TAIL = 64 * 1024  # with zero_copy: the last bytes, read and checked, not sendfile'd


CHUNK_BUFFERS = BufferPool(keep=8)  # the copy path's chunks, shared by every response
DETACH_AFTER = 0.05


@dataclass(frozen=True, slots=True)
class Chunk:
    """``size`` bytes of a file at the start of a pooled buffer."""

    lease: Lease
    size: int

    def release(self) -> None:
        self.lease.release()


def read_chunk(fd: int, offset: int, size: int,
               sent_as: os.stat_result | None) -> Chunk | None:
    """The file's bytes at ``offset`` (up to ``size``; fewer at its end) in a pooled
    buffer; with ``sent_as``, None if the file no longer has that size and mtime after the
    read (blocking: run it in an executor).  The caller releases the chunk."""
    lease = CHUNK_BUFFERS.take(size)
    try:
        got = os.preadv(fd, [lease.view[:size]], offset)
        if sent_as is not None:
            now = os.fstat(fd)
            if (now.st_size, now.st_mtime_ns) != (sent_as.st_size, sent_as.st_mtime_ns):
                lease.release()
                return None
    except BaseException:
        lease.release()
        raise
    return Chunk(lease, got)


class _ChunkWriter:
    """Writes pooled chunks into a response's socket (or through its transport under
    TLS) and gives each buffer back once its bytes are in the kernel."""

    def __init__(self, writer: AbstractStreamWriter, transport: asyncio.BaseTransport) -> None:
        self._writer = writer
        try:
            self._fd: int | None = socket_descriptor(transport)
        except Unsupported:
            self._fd = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def write(self, chunk: Chunk) -> None:
        try:
            data = chunk.lease.view[:chunk.size]
            if self._fd is None:
                await self._writer.write(bytes(data))
                return

            copies: list[Lease] = []

            def detach(pending: list[memoryview]) -> list[memoryview]:
                copy, rest = copy_out(pending)
                copies.append(copy)
                chunk.release()
                return [rest]

            try:
                sent = await writev_to_socket(self._fd, (data,), detach=detach,
                                              detach_after=DETACH_AFTER)
            finally:
                for copy in copies:
                    copy.release()
            self._writer.output_size += sent
            if self._writer.length is not None:
                self._writer.length -= sent
        finally:
            chunk.release()


class IntactFileResponse(RangeCheckedFileResponse):
    """A ``FileResponse`` whose body is the file as it was when the headers went out, or is
    cut short with the connection closed (module rules)."""

    _sent_as: os.stat_result | None = None
    zero_copy = False  # see the module rules before setting it
    chunk_bytes = 1 << 20  # per executor read when copying: 3 hand-offs for a 2.5 MB segment

    def __init__(self, path: PathLike, *, headers: LooseHeaders | None = None) -> None:
        super().__init__(path, chunk_size=self.chunk_bytes, headers=headers)

    async def _prepare_open_file(self, request: web.BaseRequest, fobj: io.BufferedReader,
                                 st: os.stat_result,
                                 file_encoding: str | None) -> AbstractStreamWriter | None:
        self._sent_as = st
        return await super()._prepare_open_file(request, fobj, st, file_encoding)

    async def _sendfile(self, request: web.BaseRequest, fobj: IO[Any], offset: int,
                        count: int) -> AbstractStreamWriter:
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        fd = fobj.fileno()
        head = count - min(CHECKED_TAIL if self.zero_copy else self._chunk_size, count)
        sent = await self._send_head(request, writer, fd, offset, head)
        if sent == head:
            chunk = await asyncio.get_running_loop().run_in_executor(
                None, read_chunk, fd, offset + head, count - head, self._sent_as)
            if chunk is not None and chunk.size == count - head:
                writer.send_headers()
                transport = request.transport
                if transport is None:
                    chunk.release()
                    raise ConnectionResetError("connection lost")
                out = _ChunkWriter(writer, transport)
                try:
                    await out.write(chunk)
                finally:
                    out.close()
                await writer.drain()
                return writer
            if chunk is not None:
                chunk.release()
        log.warning("%s changed while being sent; connection closed short", self._path.name)
        self.force_close()
        return writer

    async def _send_head(self, request: web.BaseRequest, writer: AbstractStreamWriter,
                         fd: int, offset: int, count: int) -> int:
        """Send ``count`` bytes from ``offset`` (by sendfile with ``zero_copy`` where it
        can be used, else copied); the number sent, short if the file ended first."""
        if count == 0:
            return 0
        writer.send_headers()
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        if not self.zero_copy:
            return await self._copy(writer, transport, fd, offset, count)
        try:
            sent = await sendfile_to_transport(transport, fd, offset, count)
        except Unsupported:
            return await self._copy(writer, transport, fd, offset, count)
        writer.output_size += sent
        if writer.length is not None:
            writer.length -= sent
        return sent

    async def _copy(self, writer: AbstractStreamWriter, transport: asyncio.BaseTransport,
                    fd: int, offset: int, count: int) -> int:
        loop = asyncio.get_running_loop()
        sent = 0
        out = _ChunkWriter(writer, transport)
        try:
            while sent < count:
                size = min(self._chunk_size, count - sent)
                chunk = await loop.run_in_executor(None, read_chunk, fd, offset + sent, size,
                                                   None)
                assert chunk is not None
                got = chunk.size
                await out.write(chunk)
                sent += got
                if got < size:
                    break
        finally:
            out.close()
        return sent
