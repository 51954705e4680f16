"""One JSON object a line on the log stream, for log shippers: python-json-logger, made compact.

gunicorn.conf.py installs `JsonLines` for gunicorn's error log (stderr), which the
request log shares, so every line on the stream is one JSON object with its `time`
(UTC, ISO 8601, milliseconds), `level`, `logger` and `pid` (which worker) inside:

    {"time":"2026-01-05T10:00:00.123Z","level":"INFO","logger":"flaskapp.requests","pid":7,"event":"request",...}
    {"time":"2026-01-05T10:00:00.001Z","level":"INFO","logger":"gunicorn.error","pid":1,"message":"Booting worker with pid: 7"}

A record logged as a dict (the request log's) is its fields; any other keeps its text in
`message`. The request log's line is the one written per request, so its `Fields` take a
short path: the head is made once per logger and level, the time's seconds once per second,
and the fields are encoded as they are, without python-json-logger's search for extras.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from gunicorn import glogging
from pythonjsonlogger.json import JsonFormatter

from .. import jsontext
from ..runtime import process
from ..runtime.gevent_io import call_later

FIELDS = ["asctime", "levelname", "name", "process", "message"]
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}

_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
_encode_fields = jsontext.encoder(default=str)  # a request line's: its values are scalars


class Fields(dict):
    """A log record's fields: `JsonLines` writes them as they are; any other formatter, and
    `getMessage()`, gets them as one compact JSON text."""

    def __str__(self) -> str:
        return _ENCODER.encode(self)


def compact(data: Any, **_: Any) -> str:
    """`json.dumps` as the formatter calls it, with one encoder for every line (no per-call setup)."""
    return _ENCODER.encode(data)


class JsonLines(JsonFormatter):
    def __init__(self, **options: Any) -> None:
        options.setdefault("fmt", FIELDS)
        options.setdefault("rename_fields", RENAMED)
        super().__init__(json_serializer=compact, json_default=str, **options)
        self._heads: dict[tuple[str, str, int], str] = {}
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        fields = record.msg
        if type(fields) is not Fields or record.exc_info or record.stack_info:
            return super().format(record)
        return self.line(fields, record.levelname, record.name, record.process, record.created)

    def line(self, fields: dict[str, Any], level: str, logger: str, pid: int | None, created: float) -> str:
        """The line for `fields` logged at `level` by `logger` at `created` (time.time())."""
        key = (level, logger, pid)
        head = self._heads.get(key)
        if head is None:
            head = self._heads[key] = (f'"level":{_ENCODER.encode(level)},'
                                       f'"logger":{_ENCODER.encode(logger)},"pid":{_ENCODER.encode(pid)}')
        body = _encode_fields(fields)
        return f'{{"time":"{self._time(created)}",{head}{"," if len(body) > 2 else ""}{body[1:]}'

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return self._time(record.created)

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second, not a datetime a line
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if log_data.get("message") == "":  # a record logged as a dict of fields has no text
            del log_data["message"]
        return log_data


class BufferedLines(logging.StreamHandler):
    """A stream handler that, in a gevent worker, writes its lines in batches: one write for many.

    A request's line is one write otherwise, and that write is a large part of a one-token
    request's cost on a busy worker. Lines below WARNING wait at most `FLUSH_AFTER` seconds
    (or until `MAX_PENDING` characters wait); a WARNING or worse is written at once, after
    what waited before it. Where gevent's loop is not running (gunicorn's master) every line
    is written at once; at exit, logging's shutdown writes what still waits.
    """

    FLUSH_AFTER = 0.05  # seconds
    MAX_PENDING = 64 * 1024  # characters

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._size = 0
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._add(line, record.levelno)

    def write_fields(self, fields: dict[str, Any], logger: str) -> None:
        """An INFO line of `fields` from `logger`, formatted by our `JsonLines` with no `LogRecord`
        (see `direct_handler`)."""
        line = self.formatter.line(fields, "INFO", logger, process.pid(), time.time())  # type: ignore[union-attr]
        self.acquire()
        try:
            self._add(line, logging.INFO)
        finally:
            self.release()

    def _add(self, line: str, level: int) -> None:
        line += self.terminator
        self._pending.append(line)
        self._size += len(line)
        if level < logging.WARNING and self._size < self.MAX_PENDING:
            if self._scheduled:
                return
            if call_later(self.FLUSH_AFTER, self._flush_due):
                self._scheduled = True
                return
        self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                self._size = 0
                self.stream.write(text)
            super().flush()
        finally:
            self.release()

    def _flush_due(self) -> None:  # from the event loop
        self._scheduled = False
        try:
            self.flush()
        except (OSError, ValueError):  # the log stream is gone: nowhere left to say so
            pass


def direct_handler(logger: logging.Logger) -> BufferedLines | None:
    """The one handler `logger`'s INFO lines reach, when handing it a line directly is the same
    as logging it: exactly one handler on the way up, a `BufferedLines` with a `JsonLines`
    formatter, no filter anywhere, INFO enabled. None otherwise (tests, another configuration):
    then the line goes through `logging` as usual."""
    if not logger.isEnabledFor(logging.INFO):
        return None
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        handlers += current.handlers
        current = current.parent if current.propagate else None  # type: ignore[assignment]
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if (type(handler) is not BufferedLines or type(handler.formatter) is not JsonLines or handler.filters
            or handler.level > logging.INFO):
        return None
    return handler


def logconfig(formatter: str = "flaskapp.ops.logformat.JsonLines") -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its error log (which the request log shares) and every other
    logger as JSON lines on stderr. No level is set here, so gunicorn's `--log-level` still applies;
    the access log is left to `GunicornLogger`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": formatter}},
        "handlers": {
            "error_console": {"class": "flaskapp.ops.logformat.BufferedLines", "formatter": "json",
                              "stream": "ext://sys.stderr"},
        },
        # Not propagated: the root's handler would write each line a second time.
        "loggers": {"gunicorn.error": {"handlers": ["error_console"], "propagate": False}},
        "root": {"level": "WARNING", "handlers": ["error_console"]},
    }


class GunicornLogger(glogging.Logger):
    """gunicorn's logger, with an access log only when one is asked for (`--access-logfile`).

    gunicorn turns its access log on whenever `logconfig_dict` is set, and would then build
    its fields on every request; here it stays off unless asked for, and when on, its lines
    are JSON too (the Apache-style line in `message`). Written against gunicorn 27.0.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self._access_wanted = bool(cfg.accesslog)
        for handler in self.access_log.handlers:
            handler.setFormatter(JsonLines())

    @property
    def access_log_enabled(self) -> bool:
        return self._access_wanted
