"""The UI's message catalogue: extract every translatable string, update the ``.po`` files.

``python -m exchange.ui.catalogue`` re-extracts the msgids from the UI's
Python modules (calls of ``_``) and templates (``_()`` in Jinja2) and merges
them into each language's ``messages.po`` (new strings get an empty
translation, which the tests flag). Translators edit the ``.po`` files; the
UI compiles them when it starts (``exchange.ui.i18n``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from exchange.ui.i18n import DEFAULT_LANGUAGE, LANGUAGES, LOCALE_DIR

__all__ = ["extract", "missing", "update"]

UI_DIR = Path(__file__).resolve().parent
_METHODS = [("**/templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]
_OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
#: Strings built at run time (roles and statuses from the server), translated with ``_(value)``.
DYNAMIC = ("prosecutor", "coordinator", "auditor", "admin", "active", "suspended")


def extract() -> Catalog:
    """Return a catalogue of every msgid the UI uses (with source locations)."""
    catalog = Catalog(project="exchange-ui")
    for filename, lineno, message, comments, context in extract_from_dir(
            str(UI_DIR), _METHODS, options_map=_OPTIONS, keywords={"_": None, "gettext": None,
                                                                   "ngettext": (1, 2)}):
        catalog.add(message, locations=[(filename, lineno)], auto_comments=comments,
                    context=context)
    for word in DYNAMIC:
        catalog.add(word, locations=[("dynamic", 0)])
    return catalog


def _po(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"


def missing(language: str) -> list[str]:
    """Return the msgids used by the UI that ``language``'s catalogue does not translate."""
    with _po(language).open("rb") as handle:
        catalog = read_po(handle, locale=language)
    out = []
    for message in extract():
        if not message.id:
            continue
        have = catalog.get(message.id)
        if have is None or not have.string or have.fuzzy:
            out.append(str(message.id))
    return out


def update() -> None:
    """Merge the extracted msgids into every non-English catalogue (translations kept)."""
    template = extract()
    for language in LANGUAGES:
        if language == DEFAULT_LANGUAGE:
            continue
        path = _po(language)
        if path.exists():
            with path.open("rb") as handle:
                catalog = read_po(handle, locale=language)
        else:
            catalog = Catalog(locale=language, project="exchange-ui")
        catalog.update(template, no_fuzzy_matching=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            write_po(handle, catalog, omit_header=False, sort_output=True, no_location=True)


if __name__ == "__main__":
    update()
    for lang in LANGUAGES:
        if lang != DEFAULT_LANGUAGE and (left := missing(lang)):
            print(f"{lang}: {len(left)} untranslated", file=sys.stderr)
