"""The one place where "segment X becomes encrypted segment Y" (DESIGN "Layers").

:func:`produce_segment` is blocking (it reads the source file and runs the
cipher); callers run it in an executor.  Its output is a pure function of the
source bytes, the key and the segment's path, so every replica gives the
same bytes and the same strong ETag.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from origin.crypto.aes128 import encrypt_segment
from origin.crypto.iv import derive_iv
from origin.crypto.key import ContentKey
from origin.errors import MalformedMedia, NotFound
from origin.packaging.catalog import MediaFile, MediaKind
from origin.packaging.scheme import Scheme

MAX_SEGMENT_BYTES = 256 << 20
ENCRYPTABLE = frozenset({MediaKind.TS_SEGMENT, MediaKind.MP4_SEGMENT, MediaKind.AUDIO_SEGMENT})


@dataclass(frozen=True, slots=True)
class ProtectedSegment:
    body: bytes | bytearray = b""
    etag: str = ""


def segment_iv(scheme: Scheme, key: ContentKey, rel: str) -> bytes:
    """The IV the playlist announces and the segment is encrypted with."""
    return derive_iv(key.kid, scheme.value, rel)


def read_source(file: MediaFile) -> tuple[bytes, os.stat_result]:
    """Read a whole source file (blocking); NotFound if it vanished since the scan."""
    try:
        with open(file.real_path, "rb") as fh:
            before = os.fstat(fh.fileno())
            if before.st_size > MAX_SEGMENT_BYTES:
                raise MalformedMedia("segment too large")
            data = fh.read(before.st_size + 1)
    except FileNotFoundError:
        raise NotFound("no such file in asset") from None
    if len(data) != before.st_size:
        raise MalformedMedia("segment changed while being read")
    return data, before


def produce_segment(file: MediaFile, scheme: Scheme, key: ContentKey) -> ProtectedSegment:
    """Read ``file`` and return it protected under ``scheme`` (blocking)."""
    if file.kind not in ENCRYPTABLE:
        raise NotFound("not a media segment")
    data, st = read_source(file)
    if scheme is Scheme.AES128:
        iv = segment_iv(scheme, key, file.rel)
        body: bytes | bytearray = encrypt_segment(key.key, iv, data)
    else:
        raise NotFound("unknown protection scheme")
    return ProtectedSegment(body, protected_etag(scheme, key, file.rel, st))


def protected_etag(scheme: Scheme, key: ContentKey, rel: str, st: os.stat_result) -> str:
    """A strong ETag: the output is a pure function of these inputs."""
    ident = f"{scheme.value}\0{key.kid_hex}\0{rel}\0{st.st_size}\0{st.st_mtime_ns}"
    return '"' + hashlib.sha256(ident.encode()).hexdigest()[:32] + '"'
