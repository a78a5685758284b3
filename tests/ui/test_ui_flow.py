"""The three roles click through the local UI in Chromium against a real server.

An administrator enrols everyone (comparing fingerprints), a prosecutor opens
a case, adds the coordination centre, uploads a folder and a dropped file;
the coordination centre's dashboard shows them live, pulls them (hashes
compared with the originals); the prosecutor removes the centre, whose next
access is refused; the auditor verifies the log, finds the refusal in the
timeline, exports it, checks a receipt and a custody record by dropping
them, and switches to Serbian. Then the administrator suspends a newcomer
(whose real CLI is refused), records their new keys from a new bundle and
reinstates them (the new keys work, the old are refused). Screenshots of
each main page are written to the artefacts folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange.audit.receipt import Receipt, parse_receipt
from exchange.crypto.keys import parse_bundle
from exchange.demo_server import child_environment
from tests.support import run_cli
from tests.ui.conftest import KEYS, PASSPHRASE, UiProcess, World

pytestmark = pytest.mark.timeout(240)
NL, CC, AUDITOR, ADMIN = "prosecutor-nl-01", "coordinator-01", "auditor-01", "admin-01"
ENROL = ((NL, "prosecutor", "NL"), (CC, "coordinator", "EU"), (AUDITOR, "auditor", "EU"))
WIDE = {"width": 1280, "height": 800}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uis(world: World) -> Iterator[dict[str, UiProcess]]:
    started: dict[str, UiProcess] = {}
    try:
        for name in (ADMIN, NL, CC, AUDITOR):
            started[name] = UiProcess(world, name, [name])
        yield started
    finally:
        for process in started.values():
            process.terminate()  # all at once: each drains its connections for a second
        for process in started.values():
            process.stop()


class Pages:
    """One browser context per participant (as on their own laptops), with CSP watch."""

    def __init__(self, browser: Any, uis: dict[str, UiProcess], shots: Path) -> None:
        self.browser, self.uis, self.shots = browser, uis, shots
        self.pages: dict[str, Any] = {}
        self.console_errors: list[str] = []

    def open(self, name: str) -> Any:
        context = self.browser.new_context(viewport=WIDE, accept_downloads=True)
        page = context.new_page()
        page.on("console", lambda msg: self.console_errors.append(f"{name}: {msg.text}")
                if msg.type == "error" else None)
        page.goto(self.uis[name].launch)
        page.select_option("#keystore", index=0)
        page.fill("#passphrase", PASSPHRASE)
        page.click("#unlock-form button[type=submit]")
        page.wait_for_selector("nav")
        self.pages[name] = page
        return page

    def page(self, name: str) -> Any:
        """Return ``name``'s page, opened and unlocked on first use (one session each)."""
        return self.pages.get(name) or self.open(name)

    def shot(self, page: Any, name: str) -> None:
        """Save a screenshot of a main page, after checking every field has a label."""
        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea')]
            .filter(e => !e.labels.length && !e.getAttribute('aria-label'))
            .map(e => e.id || e.name)""")
        assert not unlabelled, (name, unlabelled)
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def pages(browser: Any, uis: dict[str, UiProcess], artefacts: Path) -> Pages:
    """The participants' browser sessions, shared by this module's tests."""
    return Pages(browser, uis, artefacts)


def flash_text(page: Any) -> str:
    return " ".join(page.locator("#messages .message").all_inner_texts())


def enrol_in_page(pages: Pages, bundle_path: Path, role: str, country: str, *,
                  shot: str | None = None) -> None:
    """Enrol the bundle's participant in the administrator's page, comparing fingerprints."""
    admin = pages.page(ADMIN)
    if not admin.url.endswith("/admin"):
        admin.goto(pages.uis[ADMIN].base + "/admin")
    bundle = parse_bundle(bundle_path.read_bytes())
    admin.set_input_files("#bundle", str(bundle_path))
    admin.click("#bundle-form button[type=submit]")
    admin.wait_for_selector("#fingerprint")
    assert admin.inner_text("#fingerprint").strip() == bundle.fingerprint
    if shot:
        pages.shot(admin, shot)
    admin.select_option("#role", role)
    admin.fill("#organisation", f"{bundle.id} office")
    admin.fill("#country", country)
    admin.check("#confirmed")
    admin.click("form[action='/admin/enrol'] button[type=submit]")
    admin.wait_for_url(re.compile(r"/admin$"))
    assert f"{bundle.id} is enrolled as {role}" in flash_text(admin)


def test_three_roles_click_through(pages: Pages, uis: dict[str, UiProcess], world: World,
                                   artefacts: Path, tmp_path: Path) -> None:
    timings: dict[str, float] = {}

    # -- the administrator enrols everyone, comparing fingerprints --------------------
    admin = pages.page(ADMIN)
    assert admin.url.endswith("/admin")
    for pid, role, country in ENROL:
        enrol_in_page(pages, KEYS / f"{pid}.bundle.json", role, country,
                      shot="admin-compare-fingerprint" if pid == NL else None)
    assert admin.locator("#participants tbody tr").count() == 4
    pages.shot(admin, "admin-participants")

    # -- the prosecutor opens a case and adds the coordination centre ----------------
    nl = pages.open(NL)
    assert nl.url.endswith("/cases")
    nl.fill("#title", "Operation Nightjar")
    nl.click("form[action='/cases'] button[type=submit]")
    nl.wait_for_url(re.compile(r"/cases/case-[0-9a-f]+$"))
    case_id = nl.url.rsplit("/", 1)[1]
    assert nl.inner_text("h1") == "Operation Nightjar"
    # -- the coordination centre's dashboard is live before it is in any case: the
    # case shared now is followed from the membership feed, without a reload ---------
    cc = pages.open(CC)
    assert cc.url.endswith("/dashboard")
    cc.wait_for_selector("#live-state[data-live='yes']")
    assert cc.locator("#live tbody tr").count() == 0

    nl.fill("#participant", CC)
    nl.click(f"form[action='/cases/{case_id}/members'] button[type=submit]")
    nl.wait_for_selector(f"tr[data-member='{CC}'] code.fp")
    cc_fp = parse_bundle((KEYS / f"{CC}.bundle.json").read_bytes()).fingerprint
    assert nl.inner_text(f"tr[data-member='{CC}'] code.fp") == cc_fp
    assert "was sealed to it on this computer" in flash_text(nl)

    # -- the prosecutor drops a folder (relative paths kept) and a single file --------
    folder = tmp_path / "seizure-3"
    (folder / "phone").mkdir(parents=True)
    originals = {
        "seizure-3/phone/sms.db": os.urandom(700 * 1024 + 13),
        "seizure-3/notes.txt": b"seized 2026-12-01 at 06:10 by team B\n" * 50,
    }
    for relative, data in originals.items():
        (tmp_path / relative).write_bytes(data)
    nl.set_input_files("#pick-folder", str(folder))
    nl.wait_for_selector("#evidence tbody tr >> nth=1", timeout=60_000)
    listed = nl.locator("#evidence tbody td:first-child").all_inner_texts()
    for relative in originals:
        assert any(text.startswith(relative) for text in listed), (relative, listed)
    cc.wait_for_selector("#live tbody tr >> nth=1", timeout=10_000)  # live, without a reload
    assert cc.locator("#live tbody tr").count() == 2

    photo = os.urandom(90 * 1024)
    # Both pages note (same browser clock) when the upload finished and when the row arrived.
    nl.evaluate("""() => new MutationObserver((_, obs) => {
        for (const li of document.querySelectorAll('#transfers li.good')) {
          if (li.textContent.includes('photo-0001.jpg')) {
            sessionStorage.doneAt = String(Date.now()); obs.disconnect(); }
        }
      }).observe(document.querySelector('#transfers'),
                 {subtree: true, childList: true, attributes: true})""")
    cc.evaluate("""() => new MutationObserver((_, obs) => {
        if (document.querySelector('#live').textContent.includes('photo-0001.jpg')) {
          window.arrivedAt = Date.now(); obs.disconnect(); }
      }).observe(document.querySelector('#live'), {subtree: true, childList: true})""")
    started = time.monotonic()
    nl.evaluate("""([bytes, name]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], name, {lastModified: 1764547200000}));
        document.querySelector('#dropzone').dispatchEvent(
            new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [list(photo), "photo-0001.jpg"])
    cc.wait_for_selector("#live tbody tr:has-text('photo-0001.jpg')", timeout=30_000)
    timings["drop_to_dashboard_s"] = time.monotonic() - started
    nl.wait_for_selector("#evidence tbody tr:has-text('photo-0001.jpg')", timeout=30_000)
    done_at = nl.evaluate("() => Number(sessionStorage.doneAt) || null")
    assert done_at is not None
    # The upload counts as finished once its commit answered; the centre's row follows
    # through the server's feed and the UI's event stream.
    timings["commit_to_dashboard_s"] = (cc.evaluate("() => window.arrivedAt") - done_at) / 1000
    assert timings["commit_to_dashboard_s"] < 2.0, timings
    originals["photo-0001.jpg"] = photo
    pages.shot(cc, "coordinator-dashboard-live")
    pages.shot(nl, "prosecutor-case")

    # -- the coordination centre pulls everything and the hashes match ----------------
    dest = tmp_path / "pulled"
    cc.fill("#dest", str(dest))
    cc.click("#pull-form button[type=submit]")
    cc.locator("#live .badge.good").nth(2).wait_for(timeout=60_000)
    pages.shot(cc, "coordinator-dashboard-pulled")
    for relative, data in originals.items():
        name = relative.rsplit("/", 1)[-1]
        pulled = dest / case_id / name
        assert sha256(pulled) == hashlib.sha256(data).hexdigest(), name
        assert (dest / case_id / f"{name}.custody.json").is_file()

    # -- the prosecutor removes the centre; its next access is refused ----------------
    nl.click(f"tr[data-member='{CC}'] button.danger")
    nl.wait_for_selector(f"tr.removed[data-member='{CC}']")
    assert "new case key (epoch 2)" in flash_text(nl)
    # The removed centre stays an intended recipient of the three files uploaded before.
    assert nl.locator(f"#evidence td.deliveries [data-recipient='{CC}']:has-text('removed')"
                      ).count() == 3
    cc.goto(uis[CC].base + f"/cases/{case_id}")
    cc.wait_for_url(re.compile(r"/cases$"))
    assert "failed" in flash_text(cc).lower()

    # -- the auditor verifies, sees the refusal, exports, checks receipts -------------
    auditor = pages.open(AUDITOR)
    assert auditor.url.endswith("/audit")
    auditor.click("#verify")
    auditor.wait_for_selector("#timeline li", timeout=60_000)
    refusal = auditor.locator(f"#timeline li.denied:has-text('{CC}')").first
    refusal.wait_for()
    refused_index = refusal.get_attribute("data-index")
    pages.shot(auditor, "auditor-timeline")
    auditor.select_option("#f-outcome", "denied")
    auditor.fill("#f-actor", CC)
    auditor.click("form.filters button[type=submit]")
    auditor.wait_for_url(re.compile(r"outcome=denied"))
    shown = auditor.locator("#timeline li")
    assert shown.count() >= 1
    assert shown.count() == auditor.locator("#timeline li.denied").count()
    exported = auditor.request.get(uis[AUDITOR].base + "/audit/export.json?outcome=denied")
    report = json.loads(exported.body())
    assert report["refused"] == len(report["entries"]) >= 1
    html = auditor.request.get(uis[AUDITOR].base + "/audit/export.html?outcome=denied")
    assert "refused" in html.text() and html.headers["content-disposition"].startswith(
        "attachment")
    receipt = auditor.request.get(uis[AUDITOR].base + f"/audit/receipt/{refused_index}")
    assert receipt.ok
    receipt_file = tmp_path / f"entry-{refused_index}.receipt"
    receipt_file.write_bytes(receipt.body())
    auditor.set_input_files("#pick-receipt", str(receipt_file))
    auditor.wait_for_selector("#check-results .result.good")
    assert "refused" in auditor.inner_text("#check-results")
    custody = dest / case_id / "notes.txt.custody.json"
    auditor.set_input_files("#pick-receipt", str(custody))
    auditor.locator("#check-results .result").nth(1).wait_for()
    assert auditor.locator("#check-results .result.good").count() == 2, \
        auditor.inner_text("#check-results")
    tampered = tmp_path / "tampered.receipt"
    proof = parse_receipt(receipt.body())
    assert proof.extra is not None and b'"denied"' in proof.extra
    tampered.write_bytes(Receipt(index=proof.index, proof=proof.proof, checkpoint=proof.checkpoint,
                                 extra=proof.extra.replace(b'"denied"', b'"ok"')).encode())
    auditor.set_input_files("#pick-receipt", str(tampered))
    auditor.wait_for_selector("#check-results .result.bad")
    pages.shot(auditor, "auditor-receipt-check")

    # -- switching the language ----------------------------------------------------------
    auditor.goto(uis[AUDITOR].base + "/audit")
    auditor.select_option("#language", "sr_Latn")
    auditor.wait_for_selector("html[lang='sr-Latn']")
    assert auditor.inner_text("h1") == "Revizioni dnevnik"
    assert "odbijeno" in auditor.inner_text("#timeline")
    pages.shot(auditor, "auditor-timeline-sr")
    auditor.select_option("#language", "en")
    auditor.wait_for_selector("html[lang='en']")

    # -- narrow screens ------------------------------------------------------------------
    nl.set_viewport_size({"width": 800, "height": 900})
    nl.goto(uis[NL].base + f"/cases/{case_id}")
    assert nl.evaluate("document.documentElement.scrollWidth") <= 800
    pages.shot(nl, "prosecutor-case-800px")

    csp = [e for e in pages.console_errors if "Content Security Policy" in e]
    assert not csp, csp
    (artefacts / "timings.json").write_text(json.dumps(timings, indent=2))


NEWCOMER = "prosecutor-rs-01"


def exchange_cli(world: World, keystore: Path, *args: str) -> subprocess.Popen[str]:
    """Start the real ``exchange ARGS`` with ``keystore`` (its own home and state beside it)."""
    home = keystore.with_suffix(".home")
    env = {**child_environment(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_STATE_HOME": str(home / ".state"), "EXCHANGE_URL": world.url,
           "EXCHANGE_TRUST": str(world.trust), "EXCHANGE_KEYSTORE": str(keystore),
           "EXCHANGE_PASSPHRASE": PASSPHRASE, "EXCHANGE_TEST_WEAK_KDF": "1"}
    return subprocess.Popen([sys.executable, "-m", "exchange", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for ``process``; return its exit status and stderr."""
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def keygen(base: Path) -> tuple[Path, Path]:
    """``exchange keygen --bundle-out`` for the newcomer: (keystore, bundle file).

    In process (the CLI's own code, without an interpreter start-up under load)."""
    keystore, bundle = base.with_suffix(".keystore"), base.parent / f"{base.name}.bundle.json"
    status, _, err = run_cli(["keygen", "--id", NEWCOMER, "-o", str(keystore), "--bundle-out",
                              str(bundle), "--test-kdf-params", "1:64:1"],
                             {"EXCHANGE_PASSPHRASE": PASSPHRASE})
    assert status == 0, err
    return keystore, bundle


def test_admin_suspends_and_records_a_key_change(pages: Pages, world: World,
                                                 tmp_path: Path) -> None:
    """The administrator's page suspends, records new keys, reinstates: the real CLI of the
    participant is refused while suspended, works with the new keys, not with the old."""
    admin = pages.page(ADMIN)
    base = pages.uis[ADMIN].base
    old_keystore, old_bundle = keygen(tmp_path / "old")
    enrol_in_page(pages, old_bundle, "prosecutor", "RS")
    row = f"#participants tr[data-participant='{NEWCOMER}']"
    admin.wait_for_selector(f"{row}[data-status='active']")

    # -- suspend, with the confirmation step in plain words -----------------------------
    admin.click(f"{row} a.danger")
    admin.wait_for_url(re.compile(rf"/admin/participants/{NEWCOMER}/suspend$"))
    said = admin.inner_text("#consequences")
    assert "requests will be refused from now on" in said
    assert "must be re-keyed by the prosecutors who own them" in said
    pages.shot(admin, "admin-suspend-confirm")
    admin.fill("#reason", "laptop stolen")
    admin.press("#reason", "Enter")  # the keyboard submits the form
    admin.wait_for_url(re.compile(r"/admin$"))
    assert f"{NEWCOMER} is suspended" in flash_text(admin)
    admin.wait_for_selector(f"{row}[data-status='suspended']")
    # The participant's next request, while the page goes on to the comparison step.
    probe = exchange_cli(world, old_keystore, "case", "list")

    # -- record the key change from a new bundle, comparing fingerprints ----------------
    new_keystore, new_bundle = keygen(tmp_path / "new")
    new_fp = parse_bundle(new_bundle.read_bytes()).fingerprint
    old_fp = parse_bundle(old_bundle.read_bytes()).fingerprint
    forged = tmp_path / "forged.bundle.json"  # its proof of possession is not even base64
    forged.write_text(json.dumps({**json.loads(new_bundle.read_bytes()), "possession": "!"}))
    admin.set_input_files("#new-bundle", str(forged))
    admin.click("#key-change-form button[type=submit]")
    admin.wait_for_url(re.compile(r"/admin$"))
    assert "not a valid participant bundle" in flash_text(admin)
    admin.set_input_files("#new-bundle", str(new_bundle))
    admin.click("#key-change-form button[type=submit]")
    admin.wait_for_selector("#fingerprint")
    assert admin.inner_text("#fingerprint").strip() == new_fp
    assert admin.inner_text("#current-fingerprint").strip() == old_fp
    pages.shot(admin, "admin-key-change-compare")
    status, err = finished(probe)  # (before the new keys are recorded)
    assert status == 4 and "suspended" in err, err
    admin.fill("#reason", "laptop stolen")
    admin.check("#confirmed")
    admin.click("form[action='/admin/key-change'] button[type=submit]")
    admin.wait_for_url(re.compile(r"/admin$"))
    assert f"The new keys of {NEWCOMER} are recorded" in flash_text(admin)
    assert admin.inner_text(f"{row} code.fp") == new_fp

    # -- reinstate; the new keys work, the old ones are refused -------------------------
    admin.click(f"{row} a.button")
    admin.wait_for_url(re.compile(rf"/admin/participants/{NEWCOMER}/reinstate$"))
    admin.fill("#reason", "new keys recorded")
    admin.click("#status-form button[type=submit]")
    admin.wait_for_url(re.compile(r"/admin$"))
    assert f"{NEWCOMER} is reinstated" in flash_text(admin)
    admin.wait_for_selector(f"{row}[data-status='active']")
    pages.shot(admin, "admin-participants-actions")
    new, old = [exchange_cli(world, keystore, "case", "list")  # both at once
                for keystore in (new_keystore, old_keystore)]
    status, err = finished(new)
    assert status == 0, err
    status, err = finished(old)
    assert status == 4 and "could not verify your request signature" in err, err
    assert admin.goto(base + "/admin/participants/nobody-here/suspend") is not None
    assert "nobody-here" in flash_text(admin)  # an unknown participant: back, with why
    csp = [e for e in pages.console_errors if "Content Security Policy" in e]
    assert not csp, csp
