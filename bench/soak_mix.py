"""The soak run's request mix: what players ask an origin for, plus one bad request in a hundred.

Rules:

- A request is a frozen ``SoakRequest``: method, raw target (path and query, sent
  exactly as written — the client does not normalise it, so traversal attempts
  reach the server), headers, body, its kind, and the statuses that are right for
  it.  A bad request is right with any 4xx and never with a 5xx.
- Targets come from the staged assets themselves: every multivariant and media
  playlist under every scheme that applies (CMAF: clear, aes128, cbcs, cenc,
  sample-aes; MPEG-TS: clear, aes128, sample-aes), the DASH MPDs (cenc, cbcs),
  every init and media segment of every scheme (HLS, and DASH for cenc/cbcs), the
  AES-128 key route and ClearKey licences for each asset's key id (read from the
  server's own AES-128 playlist: each server has its own keystore).
- The mix is blocks of 100 slots in the proportions of ``SHARES`` — exactly one bad
  request per block — shuffled, and the request in a slot is drawn within its kind;
  both from a seeded RNG, so the same seed gives the same sequence.
- Ranged (206) and conditional (304, ``If-None-Match`` with the segment's ETag from a
  probe GET) segment requests are kinds of their own.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from assets import Asset

CMAF_SCHEMES = ("clear", "aes128", "cbcs", "cenc", "sample-aes")
TS_SCHEMES = ("clear", "aes128", "sample-aes")
DASH_SCHEMES = ("cenc", "cbcs")
OK = frozenset({200})
BAD = "bad"
RANGE_HEADER = "bytes=0-65535"
UNSATISFIABLE_RANGE = "bytes=999999999-"
SHARES: Mapping[str, int] = {  # per block of 100 requests
    "segment": 54,
    "segment-range": 3,
    "segment-304": 3,
    "media-playlist": 14,
    "multivariant": 5,
    "mpd": 4,
    "licence-aes128": 8,
    "licence-clearkey": 8,
    BAD: 1,
}
BLOCK = sum(SHARES.values())
KEY_ROUTE = re.compile(r"/license/aes128/([0-9a-f]{32})")


@dataclass(frozen=True, slots=True)
class SoakRequest:
    """One request of the mix; ``expected`` empty means "any 4xx" (a bad request)."""

    kind: str  # a key of SHARES, or "bad-<why>"
    method: str
    target: str  # raw path + query, sent as is
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    expected: frozenset[int] = OK

    @property
    def bad(self) -> bool:
        return not self.expected

    def is_right(self, status: int) -> bool:
        return 400 <= status < 500 if self.bad else status in self.expected


@dataclass(frozen=True, slots=True)
class AssetLayout:
    """What of an asset the mix asks for: renditions by container, multivariant playlists."""

    asset: Asset
    cmaf: tuple[str, ...]  # rendition folders with init.mp4 + .m4s
    ts: tuple[str, ...]  # rendition folders with .ts segments
    multivariant: tuple[tuple[str, tuple[str, ...]], ...]  # (file, schemes)


def media_lines(playlist: Path) -> list[str]:
    return [line.strip() for line in playlist.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def read_layout(asset: Asset) -> AssetLayout:
    """Renditions and multivariant playlists found in the asset's folder."""
    cmaf: list[str] = []
    ts: list[str] = []
    for index in sorted(asset.folder.glob("*/index.m3u8")):
        rendition = index.parent.name
        (ts if all(s.endswith(".ts") for s in media_lines(index)) else cmaf).append(rendition)
    multivariant = []
    for playlist in sorted(asset.folder.glob("*.m3u8")):
        text = playlist.read_text()
        if "#EXT-X-STREAM-INF" not in text:
            continue
        uses = {uri.split("/", 1)[0] for uri in media_lines(playlist)}
        uses |= set(re.findall(r'URI="([^"/]+)/', text))
        multivariant.append((playlist.name, TS_SCHEMES if uses <= set(ts) else CMAF_SCHEMES))
    return AssetLayout(asset, tuple(cmaf), tuple(ts), tuple(multivariant))


def segment_files(layout: AssetLayout, rendition: str) -> list[str]:
    files = media_lines(layout.asset.folder / rendition / "index.m3u8")
    if rendition in layout.cmaf:
        files = ["init.mp4", *files]
    return [f"{rendition}/{name}" for name in files]


def segment_targets(layout: AssetLayout) -> list[str]:
    """Every init and media segment under every scheme, HLS and DASH."""
    name = layout.asset.name
    targets = []
    for rendition in layout.cmaf:
        for path in segment_files(layout, rendition):
            targets += [f"/hls/{name}/{scheme}/{path}" for scheme in CMAF_SCHEMES]
            targets += [f"/dash/{name}/{scheme}/{path}" for scheme in DASH_SCHEMES]
    for rendition in layout.ts:
        for path in segment_files(layout, rendition):
            targets += [f"/hls/{name}/{scheme}/{path}" for scheme in TS_SCHEMES]
    return targets


def playlist_targets(layout: AssetLayout) -> dict[str, list[str]]:
    name = layout.asset.name
    media = [f"/hls/{name}/{scheme}/{r}/index.m3u8" for r in layout.cmaf for scheme in CMAF_SCHEMES]
    media += [f"/hls/{name}/{scheme}/{r}/index.m3u8" for r in layout.ts for scheme in TS_SCHEMES]
    return {
        "multivariant": [f"/hls/{name}/{scheme}/{file}" for file, schemes in layout.multivariant
                         for scheme in schemes],
        "media-playlist": media,
        "mpd": [f"/dash/{name}/{scheme}/manifest.mpd" for scheme in DASH_SCHEMES],
    }


def key_playlist(layout: AssetLayout) -> str:
    """The AES-128 media playlist whose ``EXT-X-KEY`` names the asset's key id."""
    return f"/hls/{layout.asset.name}/aes128/{(layout.cmaf or layout.ts)[0]}/index.m3u8"


def find_key_id(playlist: bytes) -> str | None:
    found = KEY_ROUTE.search(playlist.decode(errors="replace"))
    return found.group(1) if found else None


def clearkey_body(kids: Sequence[str]) -> bytes:
    """A W3C EME Clear Key licence request: base64url key ids without padding."""
    encoded = [base64.urlsafe_b64encode(bytes.fromhex(k)).rstrip(b"=").decode() for k in kids]
    return json.dumps({"kids": encoded, "type": "temporary"}).encode()


def licence_requests(key_ids: Sequence[str]) -> dict[str, list[SoakRequest]]:
    json_type = (("Content-Type", "application/json"),)
    return {
        "licence-aes128": [SoakRequest("licence-aes128", "GET", f"/license/aes128/{k}")
                           for k in key_ids],
        "licence-clearkey": [SoakRequest("licence-clearkey", "POST", "/license/clearkey",
                                         json_type, clearkey_body([k])) for k in key_ids],
    }


def bad_requests(layout: AssetLayout) -> list[SoakRequest]:
    """Unknown assets and files, traversal attempts, malformed key ids, unsatisfiable
    ranges, malformed ClearKey bodies: each must get a 4xx."""
    name = layout.asset.name
    rendition = (layout.cmaf or layout.ts)[0]
    segment = segment_files(layout, rendition)[-1]
    json_type = ("Content-Type", "application/json")
    none: frozenset[int] = frozenset()

    def get(why: str, target: str, *headers: tuple[str, str]) -> SoakRequest:
        return SoakRequest(f"bad-{why}", "GET", target, headers, None, none)

    def clearkey(body: bytes) -> SoakRequest:
        return SoakRequest("bad-clearkey", "POST", "/license/clearkey", (json_type,), body, none)

    return [
        get("unknown", "/hls/no-such-asset/clear/master.m3u8"),
        get("unknown", "/dash/no-such-asset/cenc/manifest.mpd"),
        get("unknown", f"/hls/{name}/cbcs/{rendition}/seg-99999.m4s"),
        get("unknown", f"/hls/{name}/rot13/master.m3u8"),
        get("traversal", f"/hls/{name}/clear/../../../etc/passwd"),
        get("traversal", f"/hls/{name}/clear/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
        get("traversal", f"/hls/{name}/aes128/..%2f..%2f..%2fstate%2fkek"),
        get("traversal", f"/dash/{name}/cenc/{rendition}/..%2f..%2f..%2fetc%2fshadow"),
        get("traversal", f"/hls/{name}/clear/{rendition}/..%5c..%5c..%5ckek"),
        get("key-id", "/license/aes128/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"),
        get("key-id", "/license/aes128/1234"),
        get("key-id", "/license/aes128/" + "a" * 33),
        get("range", f"/hls/{name}/clear/{segment}", ("Range", UNSATISFIABLE_RANGE)),
        get("range", f"/hls/{name}/cenc/{segment}", ("Range", UNSATISFIABLE_RANGE)),
        clearkey(b"{"),
        clearkey(b"not json"),
        clearkey(b"[]"),
        clearkey(b'{"kids": "x"}'),
        clearkey(b'{"kids": []}'),
        clearkey(b'{"kids": ["!!!"], "type": "temporary"}'),
        clearkey(b'{"kids": ["AAAAAAAAAAAAAAAAAAAAAA"], "type": "temporary"}'),  # unknown kid
    ]


def candidate_requests(layouts: Sequence[AssetLayout],
                       key_ids: Sequence[str]) -> dict[str, list[SoakRequest]]:
    """Every request of the mix by kind, before the probe (no ranged or conditional yet)."""
    kinds: dict[str, list[SoakRequest]] = {kind: [] for kind in SHARES}
    for layout in layouts:
        kinds["segment"] += [SoakRequest("segment", "GET", t) for t in segment_targets(layout)]
        for kind, targets in playlist_targets(layout).items():
            kinds[kind] += [SoakRequest(kind, "GET", t) for t in targets]
        kinds[BAD] += bad_requests(layout)
    for kind, requests in licence_requests(key_ids).items():
        kinds[kind] += requests
    return kinds


def derived_segment_requests(segments: Sequence[SoakRequest],
                             etags: Mapping[str, str]) -> dict[str, list[SoakRequest]]:
    """Ranged (206) and conditional (304) variants of the segment requests."""
    return {
        "segment-range": [SoakRequest("segment-range", "GET", s.target,
                                      (("Range", RANGE_HEADER),), None, frozenset({206}))
                          for s in segments],
        "segment-304": [SoakRequest("segment-304", "GET", s.target,
                                    (("If-None-Match", etags[s.target]),), None,
                                    frozenset({304}))
                        for s in segments if s.target in etags],
    }


def build_sequence(kinds: Mapping[str, Sequence[SoakRequest]], blocks: int,
                   seed: int) -> list[SoakRequest]:
    """``blocks`` × 100 requests in the proportions of ``SHARES``, shuffled per block."""
    rng = random.Random(seed)
    slots = [kind for kind, share in SHARES.items() if kinds.get(kind) for _ in range(share)]
    sequence = []
    for _ in range(blocks):
        rng.shuffle(slots)
        sequence += [rng.choice(kinds[kind]) for kind in slots]
    return sequence
