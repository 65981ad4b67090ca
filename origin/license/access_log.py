"""The licence module's access log: method and path only, never the query string.

Players' tokens travel in ``?token=``; aiohttp's default format logs ``%r`` (the
request line, query included), so runners serving the licence app pass
``access_log_class=LicenseAccessLogger``.  Headers (``Authorization``) are never
logged either.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class LicenseAccessLogger(AbstractAccessLogger):
    """Logs ``remote "METHOD /path" status bytes duration`` at INFO."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %d %.6f',
            request.remote or "-",
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
        )
