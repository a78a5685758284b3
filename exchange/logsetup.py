"""structlog configuration: JSON lines, and a redaction processor that keeps secrets out.

Secrets never reach logs (STYLE 38): any key whose name suggests key
material, signatures, passphrases or plaintext is replaced, and every
``bytes`` value is replaced, whatever its key. The redaction runs before
rendering, so no renderer can bypass it.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"
# Matched against lowercased key names; "key" alone also covers signing_key, private_key, ...
_SECRET_KEY_NAMES = re.compile(
    r"key|secret|token|passphrase|password|plaintext|signature|authorization|envelope|identity"
)
# Key names that contain a secret-looking word but carry only public identifiers.
_PUBLIC_KEY_NAMES = frozenset({"keyid", "key_id", "actor_key", "log_key_name"})


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    """Whether a field called ``name`` must be redacted (cached: every request logs one line)."""
    lowered = name.lower()
    return lowered not in _PUBLIC_KEY_NAMES and _SECRET_KEY_NAMES.search(lowered) is not None


def _redact_value(name: str, value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return REDACTED
    if _secret_name(name):
        return REDACTED
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


def _fallback(value: object) -> Any:
    """Render what JSON cannot (as structlog's renderer does): ``__structlog__()`` or repr."""
    render = getattr(value, "__structlog__", None)
    return render() if callable(render) else repr(value)


# One encoder for every line: json.dumps(..., sort_keys=True) builds a new one per call.
_ENCODER = json.JSONEncoder(sort_keys=True, default=_fallback)


def _dumps(value: object, **_ignored: Any) -> str:
    return _ENCODER.encode(value)


#: Values that need no look inside: only their field's name can make them secret.
_SCALARS = (str, int, float, bool, type(None))


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace secret-looking fields and all bytes values."""
    for name, value in event_dict.items():  # values are replaced in place, keys stay
        if name == "event" or (type(value) in _SCALARS and not _secret_name(name)):
            continue
        event_dict[name] = _redact_value(name, value)
    return event_dict


class _UtcStamper:
    """structlog processor: ``timestamp``, ISO 8601 UTC with microseconds (``…T13:45:40.246618Z``).

    The date and time of day are formatted once per second and the
    microseconds appended: formatting a datetime was a tenth of a log line.
    """

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


def configure_logging(*, level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog to write JSON lines (one event per line) to ``stream``.

    Each line reaches the stream in one ``write`` with its newline (structlog's
    ``WriteLogger``; its ``PrintLogger`` wrote the newline apart): one system call
    per line instead of two, and a line from one process cannot be split by
    another's when several servers append to one file.
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _UtcStamper(),
            redact_secrets,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
