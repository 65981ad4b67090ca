"""The licence module: keystore, policies and key delivery, served as its own aiohttp app.

The origin never imports ``origin.license.keystore``; it fetches content keys over the
internal API (``/internal/v1/…``) and proxies players' ``/license/…`` requests here.
"""
