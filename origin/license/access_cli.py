"""Command-line access control: ``token mint`` and ``policy list|show|set|delete``.

``token mint`` reads the ``[token]`` table of the licence configuration (algorithm,
issuer, audience and the verification key) and prints a signed player token; HS256
signs with the verification secret, RS256/ES256 with ``--private-key-file``.  The
minted token is verified with the configured key before it is printed, so a
private key that does not match the configuration fails here, not in a player.

``policy`` commands work on the keystore of ``--state-dir``/``--kek-file`` like the
``keys`` commands, and print policies in the admin API's JSON shape.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from origin.errors import OriginError
from origin.license.cli import DB_FILE, _fail, _open_existing, store_options
from origin.license.keystore import Keystore, KeystoreError
from origin.license.kid import parse_kid_strict
from origin.license.policy import MAX_DURATION_S, Restriction, parse_policy
from origin.license.settings import load_kek, load_license_config
from origin.license.token import (
    JwtVerifier,
    TokenRejected,
    TokenSettings,
    mint_token,
    parse_token_settings,
)

DEFAULT_TTL_S = 3600


def add_access_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``token`` and ``policy`` subcommands on the main parser's subparsers."""
    token_parser = sub.add_parser("token", help="player tokens (JWT)")
    token_sub = token_parser.add_subparsers(dest="token_command", required=True)
    mint = token_sub.add_parser("mint", help="print a signed player token")
    mint.add_argument("--license-config", type=Path, required=True,
                      help="licence configuration file with a [token] table")
    mint.add_argument("--asset", action="append", default=[], help="an asset the token covers")
    mint.add_argument("--key-id", action="append", default=[],
                      help="a key id the token covers (32 hex digits or UUID)")
    mint.add_argument("--offline", action="store_true", help="allow persistent licences")
    mint.add_argument("--max-uses", type=int, default=None, help="licence requests allowed")
    mint.add_argument("--ttl", type=int, default=DEFAULT_TTL_S,
                      help=f"lifetime in seconds (default {DEFAULT_TTL_S})")
    mint.add_argument("--jti", default=None, help="token id (the replay counter's key)")
    mint.add_argument("--private-key-file", type=Path, default=None,
                      help="PEM private key (RS256/ES256)")
    mint.add_argument("--kid", default=None,
                      help="key id for the JWS header (a JWK Set with several keys)")
    mint.set_defaults(func=mint_command)

    store = store_options()
    policy_parser = sub.add_parser("policy", help="content key policies")
    policy_sub = policy_parser.add_subparsers(dest="policy_command", required=True)
    policy_sub.add_parser("list", parents=[store], help="list stored policies").set_defaults(
        func=list_policies
    )
    show = policy_sub.add_parser("show", parents=[store], help="show an asset's policy")
    show.add_argument("asset")
    show.set_defaults(func=show_policy)
    set_parser = policy_sub.add_parser(
        "set", parents=[store], help="store an asset's policy (unnamed fields keep their value)"
    )
    set_parser.add_argument("asset")
    set_parser.add_argument("--restriction", choices=[r.value for r in Restriction])
    set_parser.add_argument("--persistent", action=argparse.BooleanOptionalAction, default=None,
                            help="allow persistent (offline) licences")
    set_parser.add_argument("--license-duration", type=int, default=None,
                            help=f"seconds, 1 to {MAX_DURATION_S}; 0 removes the limit")
    set_parser.add_argument("--rental-duration", type=int, default=None,
                            help=f"seconds, 1 to {MAX_DURATION_S}; 0 removes the limit")
    set_parser.set_defaults(func=set_policy)
    delete = policy_sub.add_parser("delete", parents=[store],
                                   help="drop an asset's policy (the default applies)")
    delete.add_argument("asset")
    delete.set_defaults(func=delete_policy)


def mint_command(args: argparse.Namespace) -> int:
    """``token mint``: a token for the configured issuer and audience, on stdout."""
    config_path: Path = args.license_config
    try:
        settings = _token_settings(config_path)
        kids = [parse_kid_strict(text) for text in args.key_id]
        signing_key = (
            args.private_key_file.read_bytes() if args.private_key_file is not None else None
        )
        now = time.time()
        token = mint_token(
            settings,
            signing_key=signing_key,
            key_id=args.kid,
            asset=args.asset,
            key_ids=kids,
            offline=args.offline,
            max_uses=args.max_uses,
            ttl_s=args.ttl,
            jti=args.jti,
            now=now,
        )
        JwtVerifier(settings).verify(token, now=now)
    except TokenRejected as exc:
        return _fail(f"the minted token does not verify with the configured key ({exc.reason})")
    except OSError as exc:
        return _fail(f"cannot read {args.private_key_file}: {exc.strerror}")
    except (OriginError, ValueError) as exc:
        return _fail(str(exc))
    print(token)
    return 0


def _token_settings(config_path: Path) -> TokenSettings:
    table = load_license_config(config_path).get("token")
    if not isinstance(table, dict):
        raise ValueError(f"licence config {config_path} has no [token] table")
    base = config_path.resolve().parent
    return parse_token_settings(
        table, env=os.environ, resolve=lambda path: (base / path).resolve()
    )


def list_policies(args: argparse.Namespace) -> int:
    """``policy list``: one line per stored policy."""
    try:
        with _open_existing(args) as keystore:
            policies = keystore.policies()
    except (KeystoreError, OriginError, ValueError) as exc:
        return _fail(str(exc))
    header = ("asset", "restriction", "persistent", "licence_s", "rental_s")
    rows = [header] + [
        (
            asset,
            p.restriction.value,
            "yes" if p.persistent else "no",
            "-" if p.license_duration_s is None else str(p.license_duration_s),
            "-" if p.rental_duration_s is None else str(p.rental_duration_s),
        )
        for asset, p in policies.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def show_policy(args: argparse.Namespace) -> int:
    """``policy show ASSET``: the asset's policy as JSON (``stored`` false: the default)."""
    try:
        with _open_existing(args) as keystore:
            stored = keystore.policies().get(args.asset)
            policy = stored if stored is not None else keystore.policy(args.asset)
    except (KeystoreError, OriginError, ValueError) as exc:
        return _fail(str(exc))
    _print_json({"asset": args.asset, "stored": stored is not None, "policy": policy.to_json()})
    return 0


def set_policy(args: argparse.Namespace) -> int:
    """``policy set ASSET [...]``: change the named fields of the asset's policy."""
    try:
        with _open_or_create(args) as keystore:
            data = keystore.policy(args.asset).to_json()
            if args.restriction is not None:
                data["restriction"] = args.restriction
            if args.persistent is not None:
                data["persistent"] = args.persistent
            for name, value in (("license_duration_s", args.license_duration),
                                ("rental_duration_s", args.rental_duration)):
                if value is not None:
                    data[name] = value or None
            policy = parse_policy(data)
            keystore.set_policy(args.asset, policy)
    except (KeystoreError, OriginError, ValueError, OSError) as exc:
        return _fail(str(exc))
    _print_json({"asset": args.asset, "stored": True, "policy": policy.to_json()})
    return 0


def delete_policy(args: argparse.Namespace) -> int:
    """``policy delete ASSET``: the asset falls back to the default policy."""
    try:
        with _open_existing(args) as keystore:
            deleted = keystore.delete_policy(args.asset)
    except (KeystoreError, OriginError, ValueError) as exc:
        return _fail(str(exc))
    if not deleted:
        return _fail(f"no policy stored for asset {args.asset}")
    print(f"deleted the policy of {args.asset}")
    return 0


def _open_or_create(args: argparse.Namespace) -> Keystore:
    """The keystore of ``--state-dir``, created if missing (as ``keys rotate`` does)."""
    state_dir: Path = args.state_dir
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    kek = load_kek(env=os.environ, kek_file=args.kek_file, state_dir=state_dir)
    return Keystore.open(state_dir / DB_FILE, kek)


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))
