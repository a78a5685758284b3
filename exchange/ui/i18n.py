"""The UI's one translation layer: gettext catalogues compiled at start-up, locale formats.

Every user-facing string of the UI goes through :func:`gettext` (``_`` in
templates). Catalogues ship as ``locale/<lang>/LC_MESSAGES/messages.po`` and
are compiled in memory with Babel when the UI starts, so there is no build
step and no generated file to keep in sync. English is the source language
(the msgids). The active language is a context variable set per request from
the UI's state, so Python code and templates agree. Dates are shown in UTC
(evidence times must not depend on the laptop's time zone) in the chosen
locale's format; sizes use binary units with the locale's number format.
"""

from __future__ import annotations

import contextvars
import gettext as _gettext
import io
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from babel import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "current_language",
    "format_size",
    "format_time",
    "gettext",
    "ngettext",
    "set_language",
]

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DEFAULT_LANGUAGE = "en"
#: Language code -> its own name (shown in the switcher in that language).
LANGUAGES = {"en": "English", "sr_Latn": "Srpski (latinica)"}
_current: contextvars.ContextVar[str] = contextvars.ContextVar("ui_language",
                                                              default=DEFAULT_LANGUAGE)


@cache
def _catalogue(language: str) -> _gettext.NullTranslations:
    """Return the compiled catalogue of ``language`` (English: the msgids themselves)."""
    path = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == DEFAULT_LANGUAGE or not path.is_file():
        return _gettext.NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return _gettext.GNUTranslations(buffer)


def set_language(language: str) -> None:
    """Make ``language`` (a key of :data:`LANGUAGES`) the active one for this context."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}, expected one of {sorted(LANGUAGES)}")
    _current.set(language)


def current_language() -> str:
    """Return the active language code."""
    return _current.get()


def gettext(message: str) -> str:
    """Return ``message`` in the active language (itself when untranslated)."""
    return _catalogue(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """Return the singular or plural form for ``n`` in the active language."""
    return _catalogue(_current.get()).ngettext(singular, plural, n)


def _locale() -> Locale:
    return Locale.parse(_current.get())


def format_time(value: datetime | int | str | None) -> str:
    """Return a time (datetime, epoch seconds or ISO 8601 text) in the active locale, UTC."""
    if value is None or value in {"", 0}:
        return "–"
    if isinstance(value, int):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        moment = value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment, "medium", tzinfo=UTC, locale=_locale()) + " UTC"


def format_size(n: int) -> str:
    """Return a byte count with a binary unit, the number in the active locale's format."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    pattern = "#,##0" if unit == "B" else "#,##0.0"
    return f"{format_decimal(value, format=pattern, locale=_locale())} {unit}"
