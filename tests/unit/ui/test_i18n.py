"""One translation layer: complete catalogues, matching placeholders, locale formats."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from babel.messages.pofile import read_po

from exchange.ui import catalogue, i18n

_PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]")
OTHER = [lang for lang in i18n.LANGUAGES if lang != i18n.DEFAULT_LANGUAGE]


@pytest.fixture(autouse=True)
def english_after() -> Iterator[None]:
    yield
    i18n.set_language(i18n.DEFAULT_LANGUAGE)


@pytest.mark.parametrize("language", OTHER)
def test_every_string_the_ui_uses_is_translated(language: str) -> None:
    assert catalogue.missing(language) == []


@pytest.mark.parametrize("language", OTHER)
def test_translations_keep_the_placeholders(language: str) -> None:
    with (i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale=language)
    for message in catalog:
        if message.id and message.string:
            assert sorted(_PLACEHOLDER.findall(str(message.id))) == \
                sorted(_PLACEHOLDER.findall(str(message.string))), message.id


def test_switching_language_changes_strings_and_formats() -> None:
    assert i18n.gettext("Unlock") == "Unlock"
    assert i18n.format_size(3 * 1024 * 1024 + 200_000) == "3.2 MiB"
    assert i18n.format_time(0) == "–"
    english = i18n.format_time("2026-03-01T14:05:00Z")
    i18n.set_language("sr_Latn")
    assert i18n.gettext("Unlock") == "Otključaj"
    assert i18n.format_size(3 * 1024 * 1024 + 200_000) == "3,2 MiB"
    serbian = i18n.format_time("2026-03-01T14:05:00Z")
    assert english.replace("\u202f", " ") == "Mar 1, 2026, 2:05:00 PM UTC"
    assert serbian.startswith("1. 3. 2026.") and serbian.endswith("14:05:00 UTC")


def test_rejects_an_unknown_language() -> None:
    with pytest.raises(ValueError, match="unknown language"):
        i18n.set_language("xx")
