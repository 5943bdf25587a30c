"""Log lines for people and for machines: ``--log-format`` and ``--log-level``.

The node daemon and the command line log through the standard :mod:`logging` loggers
``ittc`` (the library) and ``ittc_node`` (the daemon). :func:`configure` gives both one
handler on stderr, in one of two formats:

* ``text``: one line per record, for a terminal or the journal (each entry point keeps
  its own short layout);
* ``json``: one JSON object per line, ``{"time", "level", "logger", "message"}`` (and
  ``"exception"`` with a traceback, if any), for a log shipper. ``time`` is UTC, ISO 8601
  with milliseconds, like the audit log's.

Only entry points call it (``ittc ...``, ``python -m ittc_node``); a library user's own
logging configuration is never touched.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Sequence

__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "configure"]

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

#: Marks the handlers :func:`configure` installed (replaced, never stacked, when called again).
_MARK = "_ittc_configured"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (``ensure_ascii``: a message can never
    smuggle a line break into the log)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, separators=(",", ":"))


def configure(
    *,
    fmt: str = "text",
    level: str = "info",
    text: str = "%(levelname)s %(name)s: %(message)s",
    loggers: Sequence[str] = ("ittc", "ittc_node"),
) -> None:
    """Send ``loggers`` to stderr at ``level`` (one of :data:`LEVELS`) in format ``fmt``
    (one of :data:`FORMATS`; ``text`` uses the layout ``text``)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text))
    setattr(handler, _MARK, True)
    for name in loggers:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False
