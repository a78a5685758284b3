"""The evidence list of a case shows each file's signed handling code and note."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exchange.client import Client
from exchange.client.upload import upload_file
from exchange.demo import open_demo_keystore
from tests.ui.conftest import KEYS, UiProcess, World, request
from tests.ui.test_ui_resume import NL, _case, _unlock

pytestmark = pytest.mark.timeout(120)
NOTE = "not before the hearing of 12 May"


def test_case_page_shows_the_handling_code_and_note(world: World, tmp_path: Path) -> None:
    case_id = asyncio.run(_case(world))
    item = tmp_path / "statement.pdf"
    item.write_bytes(b"%PDF-1.7\n" + bytes(100))

    async def upload() -> None:
        async with Client(open_demo_keystore(KEYS, NL), world.url, anchor=world.anchor,
                          state_dir=world.base / "lib" / "nl") as nl:
            await upload_file(nl, case_id, item, handling="H1", handling_note=NOTE)

    asyncio.run(upload())
    ui = UiProcess(world, "handling", [NL])
    try:
        jar = _unlock(ui)
        page = request(ui, "GET", f"/cases/{case_id}", headers={"Cookie": jar})
    finally:
        ui.stop()
    html = page.data.decode()  # type: ignore[attr-defined]
    assert page.status == 200, html[:500]
    assert "not for use in court without the provider&#39;s permission\">H1</span>" in html
    assert NOTE in html
