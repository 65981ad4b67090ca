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
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class DrmContext:
    """What one response signals: the key, the enabled systems, the public licence base URL."""

    key: ContentKey
    systems: tuple[KeySystem, ...]
    public_base: str  # e.g. "https://origin.example"; licence URLs hang below it

    @property
    def playready_la_url(self) -> str:
        return f"{self.public_base}/license/playready"


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
    if KeySystem.FAIRPLAY in ctx.systems:
        tags.append(KeyTag(KeyMethod.SAMPLE_AES, f"skd://{ctx.key.kid_hex}", FAIRPLAY_KEYFORMAT,
                           "1"))
    tags.append(KeyTag(KeyMethod.SAMPLE_AES, f"/license/aes128/{ctx.key.kid_hex}", "identity",
                       "1", iv=iv))
    return tags


def hls_key_tags(ctx: DrmContext, scheme: CommonScheme) -> list[KeyTag]:
    method = KeyMethod.SAMPLE_AES if scheme is CommonScheme.CBCS else KeyMethod.SAMPLE_AES_CTR
    kid = ctx.key.kid
    tags = []
    for system in ctx.systems:
        if system is KeySystem.FAIRPLAY and scheme is CommonScheme.CBCS:
            tags.append(KeyTag(method, f"skd://{ctx.key.kid_hex}", FAIRPLAY_KEYFORMAT, "1"))
        elif system is KeySystem.WIDEVINE:
            pssh = widevine_pssh([kid], content_id(ctx.key), scheme)
            tags.append(KeyTag(method, _data_uri(pssh), WIDEVINE_KEYFORMAT, "1", keyid=kid))
        elif system is KeySystem.PLAYREADY:
            pro = playready_object(playready_header_xml(kid, ctx.key.key, ctx.playready_la_url,
                                                        scheme))
            tags.append(KeyTag(method, _data_uri(pro, "UTF-16"), PLAYREADY_KEYFORMAT, "1"))
        elif system is KeySystem.CLEARKEY:
            tags.append(KeyTag(method, _data_uri(kid), CLEARKEY_KEYFORMAT, "1", keyid=kid))
            if scheme is CommonScheme.CENC:
                # Shaka Player's HLS route to Clear Key: an identity key whose URI yields the
                # key (a real licence URL, never a data: URI).  cenc only: hls.js prefers an
                # identity key over every other and cannot decrypt SAMPLE-AES fMP4 itself, so
                # under cbcs it would break hls.js; SAMPLE-AES-CTR identity it leaves alone.
                tags.append(KeyTag(method, f"/license/aes128/{ctx.key.kid_hex}", "identity",
                                   "1"))
    return tags
