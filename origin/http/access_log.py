"""An access log that never writes query strings: tokens travel there.

Every request is logged at INFO on ``aiohttp.access`` (none sampled).  Below INFO
(``--log-level warning``) the logger says it is off (``enabled``), so aiohttp does not
call it at all for the connections opened meanwhile — no line built to be dropped.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class PathOnlyAccessLogger(AbstractAccessLogger):
    @property
    def enabled(self) -> bool:
        """Whether lines would be written (aiohttp asks once per connection)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %d %.1fms',
            request.remote, request.method, request.path, response.status,
            response.body_length, time * 1000,
        )
