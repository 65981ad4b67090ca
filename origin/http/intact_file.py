"""Clear files sent whole as they were, or visibly cut short: never a mix of two versions.

aiohttp's ``FileResponse`` takes the file's stat, sends the headers (``Content-Length``
and ETag from that stat), then copies the bytes — under uvloop, which has no
``loop.sendfile``, by reading chunks in the default executor.  A file truncated under it
ends the copy early and the connection stays open, so a keep-alive client waits for bytes
that never come; a file rewritten in place (the same inode) goes out as a body of the full
length mixing old and new bytes under the old ETag.

Rules:

- the bytes are read in the default executor, a chunk at a time with ``pread`` at its
  offset (nothing depends on the file position), never on the event loop;
- the last chunk is read together with an ``fstat`` of the open file, in the same
  executor job and after the read: if the size or mtime differ from the stat the
  headers were made from, or any read came back short, that chunk is not sent and the
  connection is closed — the client sees fewer bytes than ``Content-Length``, never the
  whole length.  Every write that changes bytes moves the mtime first, so a change at
  any time before that ``fstat`` is seen (within the kernel's timestamp tick; an mtime
  set back with ``utime`` is not, as for the ETag).  Not the ctime: the rename that
  replaces the file moves the old inode's;
- a file replaced by rename keeps its old inode open here, so the download completes
  with the old bytes, as its ETag says;
- writes wait for the transport as aiohttp's own copy does; ranges, HEAD, 304 and 416
  are aiohttp's (and ``origin.http.file_ranges``'s) as before.

It overrides two private methods of aiohttp's ``FileResponse`` (3.14): ``_prepare_open_file``
(to keep the stat) and ``_sendfile``; ``tests/test_faults.py`` fails if they stop meaning
that.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from origin.http.file_ranges import RangeCheckedFileResponse

log = logging.getLogger("origin.http")


def read_chunk(fd: int, offset: int, size: int,
               sent_as: os.stat_result | None) -> bytes | None:
    """``size`` bytes at ``offset``; with ``sent_as``, None if the file no longer has that
    size and mtime after the read (blocking: run it in an executor)."""
    data = os.pread(fd, size, offset)
    if sent_as is not None:
        now = os.fstat(fd)
        if (now.st_size, now.st_mtime_ns) != (sent_as.st_size, sent_as.st_mtime_ns):
            return None
    return data


class IntactFileResponse(RangeCheckedFileResponse):
    """A ``FileResponse`` whose body is the file as it was when the headers went out, or is
    cut short with the connection closed (module rules)."""

    _sent_as: os.stat_result | None = None

    async def _prepare_open_file(self, request: web.BaseRequest, fobj: io.BufferedReader,
                                 st: os.stat_result,
                                 file_encoding: str | None) -> AbstractStreamWriter | None:
        self._sent_as = st
        return await super()._prepare_open_file(request, fobj, st, file_encoding)

    async def _sendfile(self, request: web.BaseRequest, fobj: IO[Any], offset: int,
                        count: int) -> AbstractStreamWriter:
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        loop = asyncio.get_running_loop()
        fd, sent = fobj.fileno(), 0
        while sent < count:
            size = min(self._chunk_size, count - sent)
            last = sent + size >= count
            chunk = await loop.run_in_executor(None, read_chunk, fd, offset + sent, size,
                                               self._sent_as if last else None)
            if chunk is None or len(chunk) < size:
                log.warning("%s changed while being sent; connection closed short",
                            self._path.name)
                self.force_close()
                return writer
            await writer.write(chunk)
            sent += size
        await writer.drain()
        return writer
