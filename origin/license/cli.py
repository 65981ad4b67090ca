"""Command-line commands of the licence module: ``license serve`` and ``keys …``.

The main CLI registers them with ``add_license_commands(sub)``; each handler takes
the parsed arguments and returns an exit status.  Key bytes are never printed:
``keys`` commands show key ids (UUID form), assets, creation times and state.
``keys backup`` works while the licence module runs; ``keys restore`` refuses while
it runs, and never creates a KEK (it needs the one the backup was made with).
``license serve --audit-log FILE`` also appends the audit log of licence decisions
to FILE (``origin.license.audit``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from origin.errors import OriginError
from origin.license.audit import attach_audit_file, detach_audit_file
from origin.license.keystore import KeyRecord, Keystore, KeystoreError
from origin.license.kid import parse_kid_strict
from origin.license.restore import RestoreNotFlushed, restore_keystore
from origin.license.server import run_license_server
from origin.license.settings import (
    DEFAULT_KEK_FILE,
    KEK_ENV,
    LicenseSettings,
    load_admin_token,
    load_internal_token,
    load_kek,
    load_license_config,
)

DB_FILE = "keys.sqlite"
CONFIG_FILE = "license.toml"
DEFAULT_STATE_DIR = Path("var")


def store_options() -> argparse.ArgumentParser:
    """The ``--state-dir`` / ``--kek-file`` options every keystore command takes (a parent)."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="directory of the keystore (keys.sqlite) and the development KEK (default ./var)",
    )
    store.add_argument(
        "--kek-file",
        type=Path,
        default=None,
        help="file holding the key-encryption key (default: $ORIGIN_KEK, else <state-dir>/kek)",
    )
    return store


def add_license_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Register the ``license`` and ``keys`` subcommands on the main parser's subparsers.

    Returns the ``keys`` subparsers, so the entry layer can add commands that need more
    than the licence module (``keys import`` / ``keys export``).
    """
    store = store_options()
    license_parser = sub.add_parser("license", help="the licence module")
    license_sub = license_parser.add_subparsers(dest="license_command", required=True)
    serve = license_sub.add_parser(
        "serve",
        parents=[store],
        help="run the licence module alone (needs $ORIGIN_LICENSE_TOKEN)",
    )
    serve.add_argument("--host", default=None, help="TCP host (default 127.0.0.1)")
    serve.add_argument("--log-level", default="info", help="Python logging level (default info)")
    listen = serve.add_mutually_exclusive_group()
    listen.add_argument("--port", type=int, default=None, help="TCP port (default 8081)")
    listen.add_argument("--socket", default=None, help="listen on this Unix socket (mode 0600)")
    serve.add_argument(
        "--license-config",
        type=Path,
        default=None,
        help="licence configuration file (TOML: [token], [fairplay], [widevine], [playready]);"
        " default <state-dir>/license.toml if it exists",
    )
    serve.add_argument(
        "--audit-log",
        type=Path,
        default=None,
        help="also append the audit log of licence decisions (JSON lines) to this file"
        " (created 0600)",
    )
    serve.set_defaults(func=serve_license)

    keys_parser = sub.add_parser("keys", help="inspect and rotate content keys")
    keys_sub = keys_parser.add_subparsers(dest="keys_command", required=True)
    list_parser = keys_sub.add_parser("list", parents=[store], help="list key records")
    list_parser.add_argument("--asset", default=None, help="only this asset's keys")
    list_parser.set_defaults(func=list_keys)
    show = keys_sub.add_parser("show", parents=[store], help="show one key record")
    show.add_argument("kid", help="key id, 32 hex digits or UUID form")
    show.set_defaults(func=show_key)
    rotate = keys_sub.add_parser("rotate", parents=[store], help="give an asset a new active key")
    rotate.add_argument("asset")
    rotate.set_defaults(func=rotate_key)
    backup = keys_sub.add_parser(
        "backup",
        parents=[store],
        help="write a consistent copy of the keystore to FILE (safe while the licence module"
        " runs)",
    )
    backup.add_argument("file", type=Path, help="backup file to write (mode 0600, replaced"
                        " atomically)")
    backup.set_defaults(func=backup_keys)
    restore = keys_sub.add_parser(
        "restore",
        parents=[store],
        help="replace the keystore with a backup FILE (stop the licence module first)",
    )
    restore.add_argument("file", type=Path, help="backup file written by 'keys backup'")
    restore.add_argument(
        "--force",
        action="store_true",
        help=f"replace an existing keystore (kept as {DB_FILE}.bak-<time>)",
    )
    restore.set_defaults(func=restore_keys)

    # Imported here: access_cli reuses this module's helpers (an import cycle otherwise).
    from origin.license.access_cli import add_access_commands

    add_access_commands(sub)
    return keys_sub


def serve_license(args: argparse.Namespace) -> int:
    """``license serve``: run the licence module until SIGTERM/SIGINT."""
    if args.socket is not None and args.host is not None:
        return _fail("--host cannot be combined with --socket")
    state_dir: Path = args.state_dir
    try:
        token = load_internal_token(os.environ)
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        kek = load_kek(env=os.environ, kek_file=args.kek_file, state_dir=state_dir)
        admin_token = load_admin_token(os.environ)
        config_path: Path | None = args.license_config
        if config_path is None and (state_dir / CONFIG_FILE).is_file():
            config_path = state_dir / CONFIG_FILE
        config = load_license_config(config_path) if config_path is not None else {}
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    settings = LicenseSettings(
        db_path=state_dir / DB_FILE,
        kek=kek,
        internal_token=token,
        admin_token=admin_token,
        config=config,
        config_dir=(config_path.parent if config_path is not None else state_dir).resolve(),
    )
    audit_file: logging.Handler | None = None
    try:
        if args.audit_log is not None:
            audit_file = attach_audit_file(args.audit_log)
        run_license_server(settings, host=args.host, port=args.port, unix_path=args.socket)
    except (KeystoreError, OSError, ValueError) as exc:
        return _fail(str(exc))
    finally:
        if audit_file is not None:
            detach_audit_file(audit_file)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    """``keys list [--asset A]``: one line per key, no key bytes."""
    try:
        with _open_existing(args) as keystore:
            records = keystore.records(args.asset)
    except (KeystoreError, OriginError, ValueError) as exc:
        return _fail(str(exc))
    _print_records(records)
    return 0


def show_key(args: argparse.Namespace) -> int:
    """``keys show KID``: the record of one key, no key bytes."""
    try:
        kid = parse_kid_strict(args.kid)
        with _open_existing(args) as keystore:
            stored = keystore.get(kid)
    except (KeystoreError, OriginError, ValueError) as exc:
        return _fail(str(exc))
    if stored is None:
        return _fail(f"no key with id {kid.hex()}")
    _print_records([stored.record])
    return 0


def rotate_key(args: argparse.Namespace) -> int:
    """``keys rotate ASSET``: a new active key; old keys stay for content encrypted with them."""
    state_dir: Path = args.state_dir
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        kek = load_kek(env=os.environ, kek_file=args.kek_file, state_dir=state_dir)
        with Keystore.open(state_dir / DB_FILE, kek) as keystore:
            record = keystore.rotate(args.asset)
    except (KeystoreError, OriginError, ValueError, OSError) as exc:
        return _fail(str(exc))
    _print_records([record])
    return 0


def backup_keys(args: argparse.Namespace) -> int:
    """``keys backup FILE``: an online, checked copy of the keystore; prints counts only."""
    try:
        with _open_existing(args) as keystore:
            summary = keystore.backup_to(args.file)
    except (KeystoreError, OriginError, ValueError, OSError) as exc:
        return _fail(str(exc))
    print(
        f"backed up {summary.keys} keys of {summary.assets} assets to {args.file}"
        " (integrity and KEK checked; keep the KEK apart from this file)"
    )
    return 0


def restore_keys(args: argparse.Namespace) -> int:
    """``keys restore FILE [--force]``: put a checked backup in place of the keystore."""
    state_dir: Path = args.state_dir
    try:
        kek = _configured_kek(args)
        result = restore_keystore(args.file, state_dir / DB_FILE, kek, force=args.force)
    except RestoreNotFlushed as exc:
        return _fail(str(exc))
    except (KeystoreError, ValueError, OSError) as exc:
        return _fail(f"{exc}; nothing was changed")
    print(
        f"restored {result.summary.keys} keys of {result.summary.assets} assets"
        f" into {state_dir / DB_FILE}"
    )
    if result.previous is not None:
        print(f"the previous keystore is kept as {result.previous}")
    return 0


def _configured_kek(args: argparse.Namespace) -> bytes:
    """The configured KEK; unlike ``load_kek`` alone, never a freshly generated one."""
    state_dir: Path = args.state_dir
    if (
        KEK_ENV not in os.environ
        and args.kek_file is None
        and not (state_dir / DEFAULT_KEK_FILE).is_file()
    ):
        raise ValueError(
            f"no KEK configured: set {KEK_ENV} or --kek-file to the KEK the backup was made"
            " with"
        )
    return load_kek(env=os.environ, kek_file=args.kek_file, state_dir=state_dir)


def _open_existing(args: argparse.Namespace) -> Keystore:
    """Open the keystore of ``--state-dir``; refuse to create one for a read-only command."""
    state_dir: Path = args.state_dir
    db_path = state_dir / DB_FILE
    if not db_path.is_file():
        raise KeystoreError(f"no keystore at {db_path}")
    kek = load_kek(env=os.environ, kek_file=args.kek_file, state_dir=state_dir)
    return Keystore.open(db_path, kek)


def _print_records(records: Sequence[KeyRecord]) -> None:
    header = ("kid", "asset", "created", "active")
    rows = [header] + [
        (
            r.kid_uuid,
            r.asset,
            r.created_at.isoformat(timespec="seconds"),
            "yes" if r.active else "no",
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
