"""``sendfile(2)`` and ``writev(2)`` straight into a response's socket, under uvloop too.

uvloop has no ``loop.sendfile``, so aiohttp's ``FileResponse`` falls back to reading
the file in the executor and writing every chunk through the transport: two copies
through user space and a thread hand-off per chunk.  This module moves the bytes with
``os.sendfile`` instead, the kernel copying page cache to socket, as nginx does; and
``os.writev`` for bodies already in memory (``writev_to_socket``), so a caller
knows the moment its buffers are in the kernel and free to reuse.

Rules:

- Only on a plain stream socket: a TLS transport (its bytes must pass through the TLS
  layer) or a transport without a socket gets ``Unsupported`` and the caller copies.
- Only once everything written through the transport is in the kernel: the caller has
  flushed the headers, and the transport's write buffer must then be empty, else
  ``Unsupported`` — bytes written here would overtake the buffered ones.  Nothing else
  writes to a connection while its one response is being sent (HTTP/1.1, no pipelined
  answers), so after this the transport's own writes follow ours in order.
- The socket is used through a ``dup`` of its descriptor, owned here and closed on the
  way out: if the transport closes its own descriptor mid-send (a reset peer, shutdown),
  the number cannot be recycled under us.  ``O_NONBLOCK`` belongs to the open socket and
  so to the dup: a full socket buffer answers ``EAGAIN``, and we wait for writability
  with ``loop.add_writer`` on the dup (uvloop refuses it on a transport's own descriptor).
- A wait longer than ``stall_timeout`` without the socket becoming writable (a client
  that stopped reading) ends the send with ``ConnectionResetError``, as a reset peer
  does; aiohttp then drops the connection.
- ``sendfile`` runs on the event loop: it copies from the page cache into the socket
  buffer and returns when that buffer is full, never waiting for the client.  A file
  not in the page cache is read from disk inside the call (nginx's default too); the
  media and the disk tier of the cache are expected to stay cached.
- The file ending early (truncated under us) stops the send with the count so far; the
  caller decides what a short body means.
- ``writev_to_socket`` returns once every byte is in the kernel's socket buffer.
  When the socket stays full for ``detach_after`` seconds, it calls ``detach`` once with
  the views not yet sent and sends what that returns instead (the caller copies them
  out and frees its buffers: a client that stops reading must not hold them).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from origin.packaging.buffer_pool import BufferPool, Lease


class Unsupported(Exception):
    """This transport cannot take ``sendfile`` now; copy the bytes through it instead."""


DEFAULT_STALL_TIMEOUT = 60.0
MAX_IOVECS = 512  # below Linux's IOV_MAX (1024) per writev call


def socket_descriptor(transport: asyncio.BaseTransport) -> int:
    """A dup of ``transport``'s socket descriptor, owned by the caller, if ``sendfile``
    may write to it now (module rules); else ``Unsupported``."""
    if transport.is_closing():
        raise ConnectionResetError("connection closed")
    if (transport.get_extra_info("sslcontext") is not None
            or transport.get_extra_info("ssl_object") is not None):
        raise Unsupported("TLS transport")
    sock = transport.get_extra_info("socket")
    if sock is None:
        raise Unsupported("no socket")
    # uvloop's transports are not registered as asyncio.WriteTransport: ask for the method.
    buffered = getattr(transport, "get_write_buffer_size", None)
    if buffered is None:
        raise Unsupported("not a write transport")
    if buffered():
        raise Unsupported("bytes still buffered in the transport")
    return os.dup(sock.fileno())


async def wait_writable(fd: int, stall_timeout: float) -> None:
    """Until ``fd`` can take bytes; ``ConnectionResetError`` after ``stall_timeout``."""
    if not await writable_within(fd, stall_timeout):
        raise ConnectionResetError("client stopped reading")


async def writable_within(fd: int, seconds: float) -> bool:
    """Whether ``fd`` can take bytes within ``seconds``."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, ready.set_result, None)
    try:
        async with asyncio.timeout(seconds):
            await ready
    except TimeoutError:
        return False
    finally:
        loop.remove_writer(fd)
    return True


Detach = Callable[[list[memoryview]], list[memoryview]]
_COPIES = BufferPool(keep=0)  # a copy for a slow reader: its own mapping, unmapped when sent


def copy_out(pending: Sequence[memoryview]) -> tuple[Lease, memoryview]:
    """The bytes of ``pending`` copied, in order, into a fresh anonymous mapping (not the
    malloc heap: its pages go back to the kernel when the lease is released); the lease
    and a view of exactly those bytes."""
    total = sum(len(p) for p in pending)
    lease = _COPIES.take(total)
    at = 0
    for part in pending:
        lease.view[at:at + len(part)] = part
        at += len(part)
    return lease, lease.view[:total]


async def writev_to_socket(fd: int, parts: Sequence[bytes | bytearray | memoryview], *,
                           detach: Detach | None = None, detach_after: float = 0.0,
                           stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> int:
    """Write ``parts`` in order into the socket ``fd`` (a descriptor from
    :func:`socket_descriptor`; the caller closes it); the number of bytes, all of them,
    once they are in the kernel (module rules)."""
    pending = [memoryview(p).cast("B") for p in parts if len(p)]
    sent = 0
    while pending:
        try:
            moved = os.writev(fd, pending[:MAX_IOVECS])
        except BlockingIOError:
            if detach is not None:
                if not await writable_within(fd, detach_after):
                    pending, detach = detach(pending), None
                continue
            await wait_writable(fd, stall_timeout)
            continue
        except (BrokenPipeError, ConnectionResetError) as error:
            raise ConnectionResetError(str(error)) from None
        sent += moved
        while moved:
            first = pending[0]
            if moved < len(first):
                pending[0] = first[moved:]
                break
            moved -= len(first)
            del pending[0]
    return sent


async def sendfile_to_transport(transport: asyncio.BaseTransport, file_fd: int, offset: int,
                                count: int, *,
                                stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> int:
    """Send ``count`` bytes of ``file_fd`` from ``offset`` into ``transport``'s socket;
    the number sent, short only if the file ended first (module rules)."""
    fd = socket_descriptor(transport)
    sent = 0
    try:
        while sent < count:
            try:
                moved = os.sendfile(fd, file_fd, offset + sent, count - sent)
            except BlockingIOError:
                await wait_writable(fd, stall_timeout)
                continue
            except (BrokenPipeError, ConnectionResetError) as error:
                raise ConnectionResetError(str(error)) from None
            if moved == 0:
                break
            sent += moved
    finally:
        os.close(fd)
    return sent
