"""The licence app's shared state: its typed app keys, and how its handlers block.

What lives here, and nothing else:

- the ``web.AppKey``s every route module of the licence app reads.  ``origin.license.app``
  sets them: settings, policy, token-verifier box, metrics and decision recorder when it
  builds the app; keystore, key cache and authorizer in its ``cleanup_ctx``, once the
  keystore opens;
- ``run_blocking`` (``origin.license.blocking``): every blocking call a handler makes
  (SQLite, files) goes through it to the loop's default executor;
- ``NO_STORE``: the ``Cache-Control`` every licence, key and admin answer carries.

This module imports no route module, so every route module (and ``origin.license.app``,
which adds their routes) imports it at the top: no import cycle.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from origin.license.audit import DecisionRecorder
from origin.license.authorization import Authorizer, TokenVerifierBox
from origin.license.blocking import run_blocking
from origin.license.key_cache import KeyCache
from origin.license.keystore import Keystore
from origin.license.metrics import LicenseMetrics
from origin.license.policy import PolicyDecisionPoint
from origin.license.settings import LicenseSettings

__all__ = [
    "AUTHORIZER_KEY", "DECISIONS_KEY", "KEYSTORE_KEY", "KEY_CACHE_KEY", "METRICS_KEY",
    "NO_STORE", "POLICY_KEY", "SETTINGS_KEY", "VERIFIER_KEY", "run_blocking",
]

SETTINGS_KEY = web.AppKey("license_settings", LicenseSettings)
KEYSTORE_KEY = web.AppKey("license_keystore", Keystore)
KEY_CACHE_KEY = web.AppKey("license_key_cache", KeyCache)
POLICY_KEY = web.AppKey("license_policy", PolicyDecisionPoint)
AUTHORIZER_KEY = web.AppKey("license_authorizer", Authorizer)
VERIFIER_KEY = web.AppKey("license_token_verifier", TokenVerifierBox)
METRICS_KEY = web.AppKey("license_metrics", LicenseMetrics)
DECISIONS_KEY = web.AppKey("license_decisions", DecisionRecorder)

NO_STORE = {hdrs.CACHE_CONTROL: "no-store"}

