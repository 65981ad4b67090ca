"""Keep request lines out of aiohttp's own error logs.

aiohttp logs a request it could not parse (a request line over its limit, a
bad header) with the parser's exception, whose message quotes the raw request
line — query string, and so any token, included.  ``RequestLineRedactor``, a
filter on the ``aiohttp.server`` logger, keeps the record but drops the
traceback and names only the exception type.
"""

from __future__ import annotations

import logging


class RequestLineRedactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[0].__name__}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def install_log_redaction() -> None:
    """Attach the filter (idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, RequestLineRedactor) for f in logger.filters):
        logger.addFilter(RequestLineRedactor())
