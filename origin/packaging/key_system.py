"""The DRM key systems origin can signal."""

from __future__ import annotations

import enum


class KeySystem(enum.Enum):
    FAIRPLAY = "fairplay"
    WIDEVINE = "widevine"
    PLAYREADY = "playready"
    CLEARKEY = "clearkey"


ALL_KEY_SYSTEMS = tuple(KeySystem)
