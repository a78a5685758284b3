"""``exchange enroll`` and ``exchange case ...``: participants and cases, on the client library."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exchange.cli import _ui
from exchange.cli._client_common import client_parser, iso_time, print_json, run_client
from exchange.cli._ui import CliError, ExitCode
from exchange.client import admin, cases
from exchange.client.session import Client
from exchange.crypto.keys import BundleError, PublicBundle, bundle_possession, parse_bundle

__all__ = ["list_work", "register"]

ROLES = ("admin", "prosecutor", "coordinator", "auditor")


def _when(epoch_s: object) -> str:
    if not isinstance(epoch_s, int) or epoch_s <= 0:
        return "-"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso_times(value: Any) -> Any:
    """Return ``value`` with every ``*_at`` Unix time turned into an ISO 8601 UTC string."""
    if isinstance(value, dict):
        return {key: (iso_time(item) if key.endswith("_at") and isinstance(item, int)
                      else _iso_times(item)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_iso_times(item) for item in value]
    return value


def _case_json(case: cases.CaseSummary) -> dict[str, Any]:
    return dict(_iso_times(case.to_json()))


def read_bundle_file(path: str) -> tuple[PublicBundle, bytes | None]:
    """Return a participant's bundle file: the bundle and its proof of possession."""
    try:
        data = Path(path).read_bytes()[:64 * 1024 + 1]
        return parse_bundle(data), bundle_possession(json.loads(data))
    except OSError as err:
        raise CliError(f"cannot read bundle {path!r}: {_ui.os_reason(err)}") from None
    except (BundleError, ValueError) as err:
        raise CliError(f"bundle {path!r} is invalid: {err}",
                       "ask the participant for their *.bundle.json again") from None


def _enroll(args: argparse.Namespace) -> int:
    bundle, possession = read_bundle_file(args.bundle)
    _ui.info(f"fingerprint {bundle.fingerprint}: compare it with {bundle.id!r} by phone "
             "before you go on")

    async def work(client: Client) -> int:
        who = await admin.enrol(client, bundle, args.role, possession=possession,
                                organisation=args.org or "", country=args.country or "")
        _ui.info(f"enrolled {who.id!r} as {args.role} (signed statement logged at audit "
                 f"index {who.key_index})")
        _ui.info(f"fingerprint {who.fingerprint}: compare it with the participant")
        if args.json:
            print_json({"participant": who.id, "role": who.role,
                        "fingerprint": who.fingerprint, "key_index": who.key_index})
        return 0

    return run_client(args, work)


def _create(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        case = await cases.create_case(client, args.title)
        _ui.info(f"created case {case.case_id} {case.title!r}")
        if args.json:
            print_json(_case_json(case))
        else:
            print(case.case_id)
        return 0

    return run_client(args, work)


def _list(args: argparse.Namespace) -> int:
    return run_client(args, list_work(args))


def list_work(args: argparse.Namespace) -> Callable[[Client], Awaitable[int]]:
    """Return the body of ``exchange case list [--json]`` (the agent runs it too)."""

    async def work(client: Client) -> int:
        found = await cases.list_cases(client)
        if args.json:
            # The listing carries no members or epochs; each case's own view does.
            shown = [await cases.show_case(client, c.case_id) for c in found]
            print_json({"cases": [_case_json(c) for c in shown]})
            return 0
        if not found:
            _ui.info("you are not a member of any case")
        for case in found:
            title = case.title if case.title is not None else "(title not readable)"
            _ui.out(f"{case.case_id}  {_when(case.created_at)}  {case.created_by:<20} {title}")
        return 0

    return work


def _show(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        case = await cases.show_case(client, args.case)
        if args.json:
            print_json(_case_json(case))
            return 0
        _ui.out(f"case     {case.case_id}")
        _ui.out(f"title    {case.title if case.title is not None else '(not readable)'}")
        _ui.out(f"created  {_when(case.created_at)} by {case.created_by}")
        _ui.out("members (from the case's signed statements)")
        for member in case.members:
            state = "removed" if member.get("removed") else "active"
            _ui.out(f"  {member.get('participant', '?'):<24} {member.get('role', ''):<12} {state}"
                  f"  {member.get('fingerprint') or ''}")
        _ui.out("key epochs")
        for epoch in case.epochs:
            _ui.out(f"  {epoch.get('epoch')}  {epoch.get('recipient', '')[:40]}…")
        return 0

    return run_client(args, work)


def _add_member(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        result = await cases.add_member(client, args.case, args.participant)
        who = await client.participant(args.participant)
        _ui.info(f"added {args.participant!r} to case {args.case} (epoch {result.get('epoch')}; "
                 f"key fingerprint {who.fingerprint})")
        if args.json:
            print_json({"case_id": args.case, "participant": args.participant,
                        "epoch": result.get("epoch"), "fingerprint": who.fingerprint})
        return 0

    return run_client(args, work)


def _remove_member(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        result = await cases.remove_member(client, args.case, args.participant)
        _ui.info(f"removed {args.participant!r} from case {args.case}; new key epoch "
                 f"{result.get('epoch')} shared with the remaining members")
        if args.json:
            print_json({"case_id": args.case, "participant": args.participant,
                        "epoch": result.get("epoch")})
        return 0

    return run_client(args, work)


def _rekey(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        result = await cases.rotate_epoch(client, args.case)
        _ui.info(f"case {args.case}: new key epoch {result.get('epoch')} wrapped for every "
                 "member's current keys; new evidence uses it")
        return 0

    return run_client(args, work)


def _policy(args: argparse.Namespace) -> int:
    retention: dict[str, Any] | None = None
    if args.retain_days is not None:
        retention = {"mode": "days", "days": args.retain_days}
    elif args.until_delivered:
        retention = {"mode": "until-delivered"}
    elif args.keep:
        retention = {"mode": "keep"}
    hold = None if args.legal_hold is None else args.legal_hold == "on"
    if retention is None and hold is None:
        raise CliError("say what to change: --retain-days N, --until-delivered, --keep "
                       "or --legal-hold on|off", code=ExitCode.USAGE)

    async def work(client: Client) -> int:
        result = await cases.set_policy(client, args.case, retention=retention,
                                        legal_hold=hold)
        policy = result["policy"]
        _ui.info(f"case {args.case}: retention {policy.get('retention') or 'none (keep)'}, "
                 f"legal hold {'on' if policy.get('legal_hold') else 'off'} "
                 f"(policy statement {result['statement'][:16]}…)")
        if args.json:
            print_json(result)
        return 0

    return run_client(args, work)


def _erase(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        result = await cases.erase(client, args.case, args.file, rotate=not args.no_rotate)
        erased = result.get("erased") or []
        _ui.info(f"case {args.case}: {len(erased)} item(s) erased"
                 + (f"; epoch(s) {', '.join(map(str, result.get('shredded') or []))} "
                    "shredded" if result.get("shredded") else ""))
        if args.json:
            print_json(result)
        return 0

    return run_client(args, work)


def register(subparsers: Any) -> None:
    """Add ``enrol`` (alias ``enroll``) and ``case`` to the ``exchange`` command."""
    enroll = client_parser(
        subparsers, "enrol", "enrol a participant from its public bundle (admin)",
        "exchange enrol alice.bundle.json --role prosecutor --organisation 'OM NL' "
        "--country NL", aliases=["enroll"])
    enroll.add_argument("bundle", metavar="BUNDLE", help="the participant's *.bundle.json")
    enroll.add_argument("--role", required=True, choices=ROLES)
    enroll.add_argument("--organisation", "--org", dest="org", help="organisation")
    enroll.add_argument("--country", help="country code, e.g. NL")
    enroll.add_argument("--json", action="store_true", help="print the result as JSON")
    enroll.set_defaults(func=_enroll)

    case = subparsers.add_parser("case", help="create, list and manage cases",
                                 description="create, list and manage cases",
                                 epilog=_ui.epilog("exchange case create --title 'Operation X'",
                                                   "exchange case list"))
    sub = case.add_subparsers(dest="case_command", metavar="SUBCOMMAND", required=True)
    create = client_parser(sub, "create", "create a case (prosecutors); prints its id",
                     "exchange case create --title 'Operation Nightjar'")
    create.add_argument("--title", required=True, help="the case title (encrypted)")
    create.add_argument("--json", action="store_true", help="print the new case as JSON")
    create.set_defaults(func=_create)
    listing = client_parser(sub, "list", "list your cases with their decrypted titles",
                      "exchange case list --json")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(func=_list, agent_work=list_work)
    show = client_parser(sub, "show", "show a case: title, members, key epochs",
                   "exchange case show case-1a2b3c")
    show.add_argument("case", metavar="CASE")
    show.add_argument("--json", action="store_true", help="print a JSON object")
    show.set_defaults(func=_show)
    add = client_parser(sub, "add-member", "add a participant to a case (shares the case key)",
                  "exchange case add-member case-1a2b3c coordinator-01")
    add.add_argument("case", metavar="CASE")
    add.add_argument("participant", metavar="PARTICIPANT")
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    add.set_defaults(func=_add_member)
    remove = client_parser(sub, "remove-member",
                     "remove a participant and rotate the case key for the others",
                     "exchange case remove-member case-1a2b3c prosecutor-de-01")
    remove.add_argument("case", metavar="CASE")
    remove.add_argument("participant", metavar="PARTICIPANT")
    remove.add_argument("--json", action="store_true", help="print the result as JSON")
    remove.set_defaults(func=_remove_member)
    rekey = client_parser(sub, "rekey",
                          "start a new case key for the same members (after a key change)",
                          "exchange case rekey case-1a2b3c")
    rekey.add_argument("case", metavar="CASE")
    rekey.set_defaults(func=_rekey)
    policy = client_parser(
        sub, "policy", "set the case's retention policy or legal hold (signed, prosecutors)",
        "exchange case policy case-1a2b3c --until-delivered")
    policy.description = (
        "Sign a case.policy statement. --until-delivered: the server erases an item once "
        "every member other than its uploader has pulled it; --retain-days N: N days after "
        "its upload; --keep: never automatically. --legal-hold on blocks every erasure, "
        "erase-now included, until --legal-hold off. Erasure deletes the blob, the sealed "
        "manifest and, once an old key epoch has no item left, its envelopes; the audit log "
        "keeps ids, hashes and who accessed what.")
    policy.add_argument("case", metavar="CASE")
    mode = policy.add_mutually_exclusive_group()
    mode.add_argument("--retain-days", type=int, metavar="N",
                      help="erase items N days after their upload")
    mode.add_argument("--until-delivered", action="store_true",
                      help="erase an item once every intended recipient has pulled it")
    mode.add_argument("--keep", action="store_true", help="no automatic erasure")
    policy.add_argument("--legal-hold", choices=("on", "off"),
                        help="on: nothing of the case may be erased until it is off again")
    policy.add_argument("--json", action="store_true", help="print the result as JSON")
    policy.set_defaults(func=_policy)
    erase = client_parser(
        sub, "erase", "erase the case's evidence now, or one file (prosecutors; not under "
        "legal hold)", "exchange case erase case-1a2b3c --file ev-0123")
    erase.description = (
        "Erase now, as an owner: the server deletes the blobs and sealed manifests and logs "
        "one evidence.erase entry per item, citing this signed request. The case key is "
        "rotated first, so the old epoch's envelopes are deleted too (crypto-shredding: "
        "copies of the ciphertext, backups included, become unreadable). Refused while the "
        "case is under legal hold.")
    erase.add_argument("case", metavar="CASE")
    erase.add_argument("--file", metavar="ID", help="erase only this evidence id")
    erase.add_argument("--no-rotate", action="store_true",
                       help="do not rotate the case key first (the current epoch stays "
                            "unshredded until the next rotation)")
    erase.add_argument("--json", action="store_true", help="print the result as JSON")
    erase.set_defaults(func=_erase)
