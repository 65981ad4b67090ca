"""Key systems: which are signalled for an asset, and what each writes (SPECS §2.5, §1.7).

- HLS tags: FairPlay (``skd://`` + KID, cbcs only: FairPlay requires cbcs),
  Widevine (``data:`` URI holding the whole pssh box, ``KEYID``), PlayReady
  (``data:`` URI holding the PlayReady Object, UTF-16 charset), ClearKey
  (``org.w3.clearkey``, ``data:`` URI holding the KEY ID; under cenc also an
  ``identity`` key whose URI is the key route, Shaka Player's way).  METHOD is
  ``SAMPLE-AES`` for cbcs and ``SAMPLE-AES-CTR`` for cenc.  No data: URI ever
  holds a key.
- Init ``pssh`` boxes: the Common PSSH (v1, KIDs) always — it makes browsers
  fire ``encrypted`` for ClearKey — plus Widevine and PlayReady when enabled.
- Per request, a ``KeySelection`` (the ``key_systems`` query parameter) narrows
  what manifests signal to some of the asset's systems, and can ask for the
  ``identity`` key under cbcs too (Shaka Player's only HLS route to Clear Key;
  off by default there because hls.js prefers identity and cannot decrypt
  SAMPLE-AES fMP4 itself).  Init segments always carry every enabled system's
  pssh: they are shared by every request.
- ``license_query`` (the caller's token parameters, URL-encoded) is appended to
  every licence URL written: the key route, ``skd://``, DASH ``Laurl``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from origin.container.playready import playready_header_xml, playready_object, playready_pssh
from origin.container.pssh import common_pssh
from origin.container.widevine import widevine_pssh
from origin.crypto.iv import derive_iv
from origin.crypto.key import ContentKey
from origin.crypto.subsample import CommonScheme
from origin.packaging.hls import KeyMethod, KeyTag
from origin.packaging.key_system import KeySystem

WIDEVINE_KEYFORMAT = "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"
FAIRPLAY_KEYFORMAT = "com.apple.streamingkeydelivery"
PLAYREADY_KEYFORMAT = "com.microsoft.playready"
CLEARKEY_KEYFORMAT = "org.w3.clearkey"


IDENTITY = "identity"


@dataclass(frozen=True, slots=True)
class KeySelection:
    """The key signalling one request asks for (``key_systems=clearkey,identity``)."""

    systems: frozenset[KeySystem]
    identity: bool

    def query_value(self) -> str:
        names = sorted(s.value for s in self.systems) + ([IDENTITY] if self.identity else [])
        return ",".join(names)


def parse_key_selection(text: str) -> KeySelection:
    """Parse a comma-separated list of key system names and ``identity``; ``ValueError``."""
    known = {s.value: s for s in KeySystem}
    systems: set[KeySystem] = set()
    identity = False
    for name in (part.strip().lower() for part in text.split(",")):
        if name == IDENTITY:
            identity = True
        elif name in known:
            systems.add(known[name])
        else:
            raise ValueError(f"unknown key system {name[:32]!r}")
    return KeySelection(frozenset(systems), identity)


@dataclass(frozen=True, slots=True)
class DrmContext:
    """What one response signals: the key, the enabled systems, the public licence base URL."""

    key: ContentKey
    systems: tuple[KeySystem, ...]  # the asset's enabled systems (init segments carry them all)
    public_base: str  # e.g. "https://origin.example"; licence URLs hang below it
    selection: KeySelection | None = None  # this request's narrowing, if any
    license_query: str = field(default="", repr=False)  # the caller's token, URL-encoded

    @property
    def playready_la_url(self) -> str:
        return f"{self.public_base}/license/playready"

    @property
    def signalled(self) -> tuple[KeySystem, ...]:
        """The systems this response's manifest signals."""
        if self.selection is None:
            return self.systems
        return tuple(s for s in self.systems if s in self.selection.systems)

    def identity_key(self, scheme: CommonScheme) -> bool:
        """Whether the manifest carries an identity key (module rules)."""
        if self.selection is None:
            return KeySystem.CLEARKEY in self.systems and scheme is CommonScheme.CENC
        return self.selection.identity

    def license_url(self, path: str) -> str:
        """``path`` (``/license/…``, or an ``skd://`` URI) with the caller's token appended."""
        if not self.license_query:
            return path
        return path + ("&" if "?" in path else "?") + self.license_query

    @property
    def key_route(self) -> str:
        return self.license_url(f"/license/aes128/{self.key.kid_hex}")

    @property
    def skd_uri(self) -> str:
        return self.license_url(f"skd://{self.key.kid_hex}")


def constant_iv(key: ContentKey) -> bytes:
    """The cbcs constant IV of every track under ``key`` (carried in ``tenc``)."""
    return derive_iv(key.kid, "cbcs", "constant-iv")


def content_id(key: ContentKey) -> bytes:
    return key.kid_hex.encode()


def init_pssh_boxes(ctx: DrmContext, scheme: CommonScheme) -> list[bytes]:
    kid = ctx.key.kid
    boxes = [common_pssh([kid])]
    if KeySystem.WIDEVINE in ctx.systems:
        boxes.append(widevine_pssh([kid], content_id(ctx.key), scheme))
    if KeySystem.PLAYREADY in ctx.systems:
        boxes.append(playready_pssh(kid, ctx.key.key, ctx.playready_la_url, scheme))
    return boxes


def _data_uri(payload: bytes, charset: str | None = None) -> str:
    kind = "text/plain" + (f";charset={charset}" if charset else "")
    return f"data:{kind};base64,{base64.b64encode(payload).decode()}"


def hls_ts_key_tags(ctx: DrmContext, iv: bytes | None) -> list[KeyTag]:
    """SAMPLE-AES for MPEG-TS (SPECS §2.3): FairPlay (no IV: it travels with the key) and an
    identity key on the key route with the rendition's IV, which hls.js decrypts itself.
    The identity tag comes last: ffmpeg ignores KEYFORMAT and uses the last key tag."""
    tags = []
    if KeySystem.FAIRPLAY in ctx.signalled:
        tags.append(KeyTag(KeyMethod.SAMPLE_AES, ctx.skd_uri, FAIRPLAY_KEYFORMAT, "1"))
    if ctx.selection is None or ctx.selection.identity:
        tags.append(KeyTag(KeyMethod.SAMPLE_AES, ctx.key_route, IDENTITY, "1", iv=iv))
    return tags


def hls_key_tags(ctx: DrmContext, scheme: CommonScheme) -> list[KeyTag]:
    method = KeyMethod.SAMPLE_AES if scheme is CommonScheme.CBCS else KeyMethod.SAMPLE_AES_CTR
    kid = ctx.key.kid
    tags = []
    for system in ctx.signalled:
        if system is KeySystem.FAIRPLAY and scheme is CommonScheme.CBCS:
            tags.append(KeyTag(method, ctx.skd_uri, FAIRPLAY_KEYFORMAT, "1"))
        elif system is KeySystem.WIDEVINE:
            pssh = widevine_pssh([kid], content_id(ctx.key), scheme)
            tags.append(KeyTag(method, _data_uri(pssh), WIDEVINE_KEYFORMAT, "1", keyid=kid))
        elif system is KeySystem.PLAYREADY:
            pro = playready_object(playready_header_xml(kid, ctx.key.key, ctx.playready_la_url,
                                                        scheme))
            tags.append(KeyTag(method, _data_uri(pro, "UTF-16"), PLAYREADY_KEYFORMAT, "1"))
        elif system is KeySystem.CLEARKEY:
            tags.append(KeyTag(method, _data_uri(kid), CLEARKEY_KEYFORMAT, "1", keyid=kid))
    if ctx.identity_key(scheme):
        # Shaka Player's HLS route to Clear Key: an identity key whose URI yields the key (a
        # real licence URL, never a data: URI).  By default cenc only: hls.js prefers an
        # identity key over every other and cannot decrypt SAMPLE-AES fMP4 itself, so under
        # cbcs it would break hls.js; SAMPLE-AES-CTR identity it leaves alone.
        tags.append(KeyTag(method, ctx.key_route, IDENTITY, "1"))
    return tags
