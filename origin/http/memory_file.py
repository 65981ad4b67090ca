"""Cached segment bodies kept in anonymous memory files, sent to sockets by ``sendfile``.

A body held as ``bytes`` goes to the socket by ``write``: the kernel copies all 2.5 MB
of it for every hit, which made a memory hit cost twice nginx's static file.  Held in
a ``memfd`` instead, the same bytes leave by ``sendfile(2)`` (``origin.http.socket_sendfile``)
as the page-cache pages they are, like a static file.

Rules:

- a body is written once into a fresh memfd (``write_memory_file``, blocking: the
  caller runs it in the executor, in the job that produced the body) and never changed
  after: unlike a media file (``origin.http.intact_file``), bytes in flight from it
  cannot change under a client;
- a ``MemoryFile`` closes its descriptor when the last reference to it goes — the
  cache's entry, and the response sending it, which holds one until its last byte is
  handed to the kernel.  Eviction only drops the cache's reference, so a descriptor is
  never closed, and its number never reused, under a send;
- its pages are shared memory: counted in ``--cache-bytes`` like any cached body, but
  not in a process's resident set (they are never mapped);
- only bodies of at least ``MEMORY_FILE_MIN`` bytes, and at most ``MAX_MEMORY_FILES``
  open at once per process (each holds a descriptor, and descriptors are also what
  connections need): ``memory_file_wanted`` says whether the next body should be one;
- ``MemoryFileResponse`` answers a plain ``GET``/``HEAD`` for the whole body (200, the
  headers ``respond_bytes`` would give); Range and validators other than
  ``If-None-Match`` go through ``read_memory_file`` and ``respond_bytes`` instead;
- under TLS, or with bytes still buffered in the transport, the body is read back and
  written through the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Sequence

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from origin.http.socket_sendfile import Unsupported, sendfile_to_transport

MEMORY_FILE_MIN = 128 * 1024  # below this the copy into the socket costs little
MAX_MEMORY_FILES = 512


class MemoryFile:
    """A read-only body in an anonymous memory file; closed when unreferenced."""

    __slots__ = ("fd", "size")
    live = 0  # open in this process: made in executor threads, dropped on the loop
    _counting = threading.Lock()

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        with MemoryFile._counting:
            MemoryFile.live += 1

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"MemoryFile({self.size} bytes)"

    def __del__(self) -> None:
        with MemoryFile._counting:
            MemoryFile.live -= 1
        with contextlib.suppress(OSError):
            os.close(self.fd)


def memory_file_wanted(size: int) -> bool:
    """Whether a body of ``size`` bytes should be kept in a ``MemoryFile`` (module rules)."""
    return size >= MEMORY_FILE_MIN and MemoryFile.live < MAX_MEMORY_FILES


def write_memory_file(parts: Sequence[bytes | bytearray | memoryview]) -> MemoryFile:
    """The body made of ``parts``, in order, in a fresh memfd (blocking: run it in an
    executor)."""
    fd = os.memfd_create("origin-segment", os.MFD_CLOEXEC)
    size = 0
    try:
        for part in parts:
            with memoryview(part) as view:
                written = 0
                while written < len(view):
                    written += os.write(fd, view[written:])
            size += written
    except BaseException:
        os.close(fd)
        raise
    return MemoryFile(fd, size)


def read_memory_file(file: MemoryFile) -> bytes:
    """The whole body back as bytes (blocking, a memory copy: run it in an executor)."""
    return os.pread(file.fd, file.size, 0)


class MemoryFileResponse(web.StreamResponse):
    """200 with the whole of a ``MemoryFile``, by ``sendfile`` where it can (module rules)."""

    def __init__(self, file: MemoryFile, *, content_type: str,
                 headers: dict[str, str]) -> None:
        super().__init__(status=200, headers=headers)
        self.content_type = content_type
        self.content_length = file.size
        self._file: MemoryFile | None = file
        self._method = hdrs.METH_GET
        self._writer: AbstractStreamWriter | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self._method = request.method
        self._writer = await super().prepare(request)
        return self._writer

    async def write_eof(self, data: bytes = b"") -> None:
        file, self._file = self._file, None
        writer = self._writer
        if file is not None and writer is not None and self._method != hdrs.METH_HEAD:
            await self._send(file, writer)
        await super().write_eof(data)

    async def _send(self, file: MemoryFile, writer: AbstractStreamWriter) -> None:
        writer.send_headers()
        transport = writer.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        try:
            sent = await sendfile_to_transport(transport, file.fd, 0, file.size)
        except Unsupported:
            loop = asyncio.get_running_loop()
            await writer.write(await loop.run_in_executor(None, read_memory_file, file))
            return
        if sent != file.size:  # a memfd is never cut short; if it were, say so by closing
            self.force_close()
            raise ConnectionResetError("memory file shorter than its length")
        writer.output_size += sent
        if writer.length is not None:
            writer.length -= sent
