"""``origin keys import`` / ``origin keys export``: content keys in and out as DASH-IF CPIX 2.3.

An entry-layer module: it joins the keystore (``origin.license``) with the signalling
the origin serves (``origin.packaging.drm``), which the licence module may not import.

Import (``keys import FILE --asset A [--activate [--kid KID]]``):

- The whole document is parsed and checked before the keystore is touched; every kid
  is then checked against the keystore (same kid with another key or asset is an
  error), and only then are the keys written: a failed import writes nothing.
- Re-importing keys already stored for the asset is a no-op.  ``--activate`` makes the
  one key of the document (or the one ``--kid`` names) the asset's active key.
- ``explicitIV`` and the DRM signalling of the document are not stored: origin derives
  its IVs and writes its own signalling (a note names each key whose explicitIV is not
  the one origin derives).

Export (``keys export --asset A [--kid KID] [--output F] [--scheme cbcs|cenc]
[--license-base URL]``):

- Every key of the asset (oldest first; ``--kid`` picks one) as ``pskc:PlainValue``,
  ``commonEncryptionScheme`` from ``--scheme`` and, for cbcs, ``explicitIV`` = the
  constant IV the origin writes into ``tenc``.
- ``DRMSystemList`` per key, built with the origin's own builders so it equals what the
  origin serves: Common PSSH (init segments); Widevine (PSSH, ``ContentProtectionData``,
  HLS media/master tags); PlayReady (PSSH, PRO + pssh ``ContentProtectionData``, HLS
  tags; ``LA_URL`` = ``--license-base`` + ``/license/playready``, left out without it);
  FairPlay (HLS ``skd://`` tags; cbcs only, FairPlay requires it).
  ``ContentProtectionData`` is the content of the DASH ``ContentProtection`` element
  with unprefixed namespaces (a standalone fragment, SPECS §7).
- A file is written 0600 (it holds keys in clear), through a temporary file renamed
  into place; a warning saying so goes to stderr.  Without ``--output`` the document
  goes to stdout.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from origin.crypto.key import ContentKey
from origin.errors import OriginError
from origin.license.cli import DB_FILE, _fail, _open_existing, _print_records
from origin.license.cpix import (
    MAX_CPIX_BYTES,
    CpixDocument,
    CpixDrmSystem,
    CpixError,
    CpixKey,
    EncryptionScheme,
    HlsPlaylist,
    build_cpix,
    parse_cpix,
)
from origin.license.keystore import Keystore, KeystoreError, validate_asset
from origin.license.kid import parse_kid_strict
from origin.license.settings import load_kek

CENC_NS = "urn:mpeg:cenc:2013"  # DASH ContentProtection children (SPECS §3)
MSPR_NS = "urn:microsoft:playready"
CLEAR_KEYS_WARNING = "warning: the CPIX document holds content keys in clear; keep it secret"


def add_cpix_commands(keys_sub: argparse._SubParsersAction[argparse.ArgumentParser],
                      store: argparse.ArgumentParser) -> None:
    """Add ``import`` and ``export`` to the ``keys`` subcommands (``store``: the keystore
    options parent, :func:`origin.license.cli.store_options`)."""
    imp = keys_sub.add_parser("import", parents=[store],
                              help="import content keys from a CPIX 2.3 document")
    imp.add_argument("file", type=Path, help="the CPIX document (keys as pskc:PlainValue)")
    imp.add_argument("--asset", required=True, help="the asset the keys belong to")
    imp.add_argument("--activate", action="store_true",
                     help="make the imported key the asset's active key")
    imp.add_argument("--kid", default=None,
                     help="with --activate: the key to activate when the document has several")
    imp.set_defaults(func=import_keys)

    exp = keys_sub.add_parser("export", parents=[store],
                              help="export an asset's content keys as a CPIX 2.3 document")
    exp.add_argument("--asset", required=True)
    exp.add_argument("--kid", default=None, help="only this key (32 hex digits or UUID)")
    exp.add_argument("--output", type=Path, default=None,
                     help="write here (mode 0600) instead of stdout")
    exp.add_argument("--scheme", choices=("cbcs", "cenc"), default="cbcs",
                     help="commonEncryptionScheme and the signalling's scheme (default cbcs)")
    exp.add_argument("--license-base", default="",
                     help="public base URL of the origin (as its --public-url); the PlayReady "
                     "LA_URL hangs below it, and is left out without it")
    exp.set_defaults(func=export_keys)


# --- import ----------------------------------------------------------------------------------


def import_keys(args: argparse.Namespace) -> int:
    """``keys import FILE --asset A``: all of the document's keys, or none."""
    try:
        asset = validate_asset(args.asset)
        doc = parse_cpix(_read_document(args.file))
        active = _key_to_activate(doc, args.activate, args.kid)
        state_dir: Path = args.state_dir
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        kek = load_kek(env=os.environ, kek_file=args.kek_file, state_dir=state_dir)
        with Keystore.open(state_dir / DB_FILE, kek) as keystore:
            keys = [key.content_key for key in doc.keys]
            check_importable(keystore, keys, asset)
            records = keystore.import_keys(keys, asset, active_kid=active)
            has_active = any(record.active for record in keystore.records(asset))
    except (CpixError, KeystoreError, OriginError, ValueError, OSError) as exc:
        return _fail(_message(exc))
    _print_records(records)
    from origin.packaging.drm import constant_iv

    for key in doc.keys:
        if key.explicit_iv is not None and key.explicit_iv != constant_iv(key.content_key):
            print(f"note: explicitIV of key {key.content_key.kid_uuid} is not imported: origin"
                  " derives its own IVs", file=sys.stderr)
    if not has_active:
        print(f"note: asset {asset} has no active key; the origin makes a new one on first use "
              "(import with --activate to use an imported key)", file=sys.stderr)
    return 0


def check_importable(keystore: Keystore, keys: Sequence[ContentKey], asset: str) -> None:
    """Raise ``KeystoreError`` if any kid is already stored with another key or asset."""
    for key in keys:
        stored = keystore.get(key.kid)
        if stored is not None and (stored.record.asset != asset or stored.key.key != key.key):
            raise KeystoreError(f"key {key.kid_uuid} is already stored, differently;"
                                " nothing imported")


def _read_document(path: Path) -> bytes:
    with path.open("rb") as file:
        raw = file.read(MAX_CPIX_BYTES + 1)
    if len(raw) > MAX_CPIX_BYTES:
        raise CpixError("CPIX document too large")
    return raw


def _key_to_activate(doc: CpixDocument, activate: bool, kid_text: str | None) -> bytes | None:
    if kid_text is not None and not activate:
        raise ValueError("--kid only goes with --activate")
    if not activate:
        return None
    if kid_text is not None:
        kid = parse_kid_strict(kid_text)
        if all(key.kid != kid for key in doc.keys):
            raise ValueError("--kid names no key of the document")
        return kid
    if len(doc.keys) != 1:
        raise ValueError(f"the document has {len(doc.keys)} keys; name the one to activate"
                         " with --kid")
    return doc.keys[0].kid


# --- export ----------------------------------------------------------------------------------


def export_keys(args: argparse.Namespace) -> int:
    """``keys export --asset A``: the asset's keys and their signalling as CPIX 2.3."""
    try:
        asset = validate_asset(args.asset)
        license_base = _license_base(args.license_base)
        scheme = EncryptionScheme(args.scheme)
        with _open_existing(args) as keystore:
            keys = _asset_keys(keystore, asset, args.kid)
        doc = build_export(keys, asset, scheme, license_base)
        data = build_cpix(doc)
        if args.output is not None:
            write_private_file(args.output, data)
    except (CpixError, KeystoreError, OriginError, ValueError, OSError) as exc:
        return _fail(_message(exc))
    print(CLEAR_KEYS_WARNING, file=sys.stderr)
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        print(f"{len(keys)} key(s) of asset {asset} written to {args.output}", file=sys.stderr)
    return 0


def _asset_keys(keystore: Keystore, asset: str, kid_text: str | None) -> list[ContentKey]:
    if kid_text is not None:
        kid = parse_kid_strict(kid_text)
        stored = keystore.get(kid)
        if stored is None or stored.record.asset != asset:
            raise KeystoreError(f"asset {asset} has no key {kid.hex()}")
        return [stored.key]
    keys = []
    for record in keystore.records(asset):
        stored = keystore.get(record.kid)
        if stored is not None:
            keys.append(stored.key)
    if not keys:
        raise KeystoreError(f"asset {asset} has no keys")
    return keys


def _license_base(text: str) -> str:
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
            or parts.fragment:
        raise ValueError("--license-base must be an http(s) URL without query or fragment")
    return text.rstrip("/")


def build_export(keys: Sequence[ContentKey], asset: str, scheme: EncryptionScheme,
                 license_base: str) -> CpixDocument:
    """The CPIX document of ``keys``: PlainValue keys and the origin's signalling of each."""
    from origin.packaging.drm import constant_iv

    cpix_keys = tuple(
        CpixKey(key.kid, key.key, scheme,
                constant_iv(key) if scheme is EncryptionScheme.CBCS else None)
        for key in keys)
    systems = tuple(system for key in keys for system in drm_signalling(key, scheme, license_base))
    return CpixDocument(asset, cpix_keys, systems)


def drm_signalling(key: ContentKey, scheme: EncryptionScheme,
                   license_base: str) -> list[CpixDrmSystem]:
    """Common PSSH, Widevine, PlayReady and (cbcs) FairPlay signalling of one key, made by the
    builders the origin serves from (``origin.packaging.drm``)."""
    from origin.container.playready import playready_header_xml, playready_object, playready_pssh
    from origin.container.pssh import SystemId, parse_pssh
    from origin.crypto.subsample import CommonScheme
    from origin.packaging.drm import (
        PLAYREADY_KEYFORMAT,
        DrmContext,
        hls_key_tags,
        init_pssh_boxes,
    )
    from origin.packaging.hls import KeyMethod, KeyTag
    from origin.packaging.key_system import KeySystem

    common = CommonScheme(scheme.value)  # build_export only passes cenc or cbcs
    ctx = DrmContext(key, (KeySystem.WIDEVINE,), license_base)
    boxes = {parse_pssh(box).system_id: box for box in init_pssh_boxes(ctx, common)}

    def hls(tags: Sequence[KeyTag]) -> tuple[tuple[HlsPlaylist, str], ...]:
        return ((HlsPlaylist.MEDIA, "\n".join(tag.render("EXT-X-KEY") for tag in tags)),
                (HlsPlaylist.MASTER, "\n".join(tag.render("EXT-X-SESSION-KEY") for tag in tags)))

    widevine_pssh = boxes[SystemId.WIDEVINE]
    out = [
        CpixDrmSystem(key.kid, SystemId.COMMON, pssh=boxes[SystemId.COMMON]),
        CpixDrmSystem(key.kid, SystemId.WIDEVINE, pssh=widevine_pssh,
                      content_protection_data=_cenc_pssh_element(widevine_pssh),
                      hls_signaling_data=hls(hls_key_tags(ctx, common))),
    ]
    # PlayReady: as origin.packaging.drm builds it, but the LA_URL is only written when
    # the public base is known (a relative LA_URL would be useless to a player).
    la_url = DrmContext(key, (), license_base).playready_la_url if license_base else ""
    pro = playready_object(playready_header_xml(key.kid, key.key, la_url, common))
    playready_box = playready_pssh(key.kid, key.key, la_url, common)
    method = KeyMethod.SAMPLE_AES if common is CommonScheme.CBCS else KeyMethod.SAMPLE_AES_CTR
    pro_uri = f"data:text/plain;charset=UTF-16;base64,{base64.b64encode(pro).decode()}"
    out.append(CpixDrmSystem(
        key.kid, SystemId.PLAYREADY, pssh=playready_box,
        content_protection_data=(f'<pro xmlns="{MSPR_NS}">{base64.b64encode(pro).decode()}</pro>'
                                 + _cenc_pssh_element(playready_box)),
        hls_signaling_data=hls([KeyTag(method, pro_uri, PLAYREADY_KEYFORMAT, "1")])))
    if common is CommonScheme.CBCS:
        fairplay = DrmContext(key, (KeySystem.FAIRPLAY,), license_base)
        out.append(CpixDrmSystem(key.kid, SystemId.FAIRPLAY,
                                 hls_signaling_data=hls(hls_key_tags(fairplay, common))))
    return out


def _cenc_pssh_element(box: bytes) -> str:
    """``<cenc:pssh>`` of a DASH ContentProtection, standalone (no prefix; SPECS §3, §7)."""
    return f'<pssh xmlns="{CENC_NS}">{base64.b64encode(box).decode()}</pssh>'


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600: a temporary file in the same folder,
    flushed to disk, then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _message(exc: BaseException) -> str:
    """The error's safe text: typed errors carry a short detail that never holds a key."""
    if isinstance(exc, OriginError):
        return exc.detail
    if isinstance(exc, OSError):
        return f"{exc.filename or 'file'}: {exc.strerror or 'I/O error'}"
    return str(exc)
