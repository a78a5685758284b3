"""``exchange participant ...`` and ``exchange trust show``: the directory, by signed statements.

Every change an administrator makes here is a statement signed on this
machine (``exchange.client.admin``); the listing is the verified directory,
replayed from those statements, not the server's say-so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from exchange.cli import _ui
from exchange.cli._client_common import client_parser, run_client
from exchange.cli._ui import CliError
from exchange.cli.case_cmd import ROLES, read_bundle_file
from exchange.client import admin
from exchange.client.problems import printable
from exchange.client.session import Client
from exchange.crypto.anchor import AnchorError, parse_anchor

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        rows = await admin.list_participants(client)
        if args.json:
            _ui.print_json({"participants": rows})
            return 0
        for row in rows:
            flags = " admin" if row["admin"] else ""
            print(f"{printable(row['id'], 40):<28} {row['role']:<12} {row['status']:<10} "
                  f"{printable(row['country'], 8):<4} {row['fingerprint']}{flags}")
        return 0

    return run_client(args, work)


def _show(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        who = await client.participant(args.participant)
        view = {"id": who.id, "role": who.role, "status": who.status,
                "organisation": who.organisation, "country": who.country,
                "fingerprint": who.fingerprint, "keys_since_index": who.key_index}
        if args.json:
            _ui.print_json(view)
            return 0
        for key, value in view.items():
            print(f"{key:<18} {printable(str(value), 200)}")
        return 0

    return run_client(args, work)


def _status(args: argparse.Namespace) -> int:
    """``participant suspend`` and ``participant reinstate``: one statement each."""
    suspend = args.participant_command == "suspend"

    async def work(client: Client) -> int:
        change = admin.suspend if suspend else admin.reinstate
        result = await change(client, args.participant, reason=args.reason)
        done, outcome = (("suspended", "their requests are refused from now on") if suspend
                         else ("reinstated", "active again"))
        _ui.info(f"{done} {args.participant!r} (statement at audit index "
                 f"{result.get('audit_index')}); {outcome}")
        return 0

    return run_client(args, work)


def _role(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        await admin.set_role(client, args.participant, args.role)
        _ui.info(f"{args.participant!r} now has role {args.role}")
        return 0

    return run_client(args, work)


def _key_change(args: argparse.Namespace) -> int:
    bundle, possession = read_bundle_file(args.bundle)
    _ui.info(f"new fingerprint {bundle.fingerprint}: compare it with {bundle.id!r} by phone")

    async def work(client: Client) -> int:
        who = await admin.change_keys(client, bundle, possession=possession,
                                      reason=args.reason)
        _ui.info(f"recorded the new keys of {who.id!r} (statement at audit index "
                 f"{who.key_index}); prosecutors of their cases now run "
                 "'exchange case rekey CASE'")
        return 0

    return run_client(args, work)


def _trust_show(args: argparse.Namespace) -> int:
    try:
        anchor = parse_anchor(Path(args.file).read_bytes())
    except OSError as err:
        raise CliError(f"cannot read {args.file!r}: {_ui.os_reason(err)}") from None
    except AnchorError as err:
        raise CliError(f"{args.file!r} is not a trust anchor: {err}") from None
    if args.json:
        _ui.print_json({"fingerprint": anchor.fingerprint, **anchor.to_json()})
        return 0
    out = sys.stdout
    out.write(f"fingerprint   {anchor.fingerprint}\n")
    out.write(f"log           {anchor.origin}\n")
    out.write(f"log key       {anchor.log_key}\n")
    out.write(f"admin quorum  {anchor.admin_quorum} of {len(anchor.admins)}\n")
    for admin_entry in anchor.admins:
        b = admin_entry.bundle
        out.write(f"administrator {printable(b.id, 60)} ({printable(admin_entry.organisation, 60)}"
                  f", {printable(admin_entry.country, 8)}) {b.fingerprint}\n")
    policy = anchor.witness_policy or {}
    out.write(f"witnesses     {len(policy.get('witnesses', []))}, quorum "
              f"{policy.get('quorum', 0)}\n")
    _ui.info("compare the fingerprint with your administrator over the phone, then pin the "
             "file: EXCHANGE_TRUST=FILE or \"trust\" in ~/.config/exchange/config.json")
    return 0


def register(subparsers: Any) -> None:
    """Add ``participant`` and ``trust`` to the ``exchange`` command."""
    group = subparsers.add_parser(
        "participant", help="list, suspend, reinstate participants, change keys, roles",
        description="The directory of participants, from signed statements. Changes are "
                    "made by administrators and signed on their machine.",
        epilog=_ui.epilog("exchange participant list",
                          "exchange participant suspend prosecutor-nl-01 --reason 'laptop stolen'"))
    sub = group.add_subparsers(dest="participant_command", metavar="SUBCOMMAND", required=True)
    listing = client_parser(sub, "list", "list the verified directory", "exchange participant list")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_list)
    show = client_parser(sub, "show", "show one participant's verified keys and role",
                         "exchange participant show coordinator-01")
    show.add_argument("participant", metavar="PARTICIPANT")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_show)
    for name, func, text in (("suspend", _status, "suspend a participant (admin)"),
                             ("reinstate", _status, "reinstate a participant (admin)")):
        cmd = client_parser(sub, name, text,
                            f"exchange participant {name} prosecutor-nl-01 --reason 'lost laptop'")
        cmd.add_argument("participant", metavar="PARTICIPANT")
        cmd.add_argument("--reason", required=True, help="why (logged, in the clear)")
        cmd.set_defaults(func=func)
    role = client_parser(sub, "role", "change a participant's role (admin)",
                         "exchange participant role analyst-01 coordinator")
    role.add_argument("participant", metavar="PARTICIPANT")
    role.add_argument("role", choices=ROLES)
    role.set_defaults(func=_role)
    change = client_parser(sub, "key-change",
                           "record a participant's new keys from their new bundle (admin)",
                           "exchange participant key-change alice-new.bundle.json "
                           "--reason 'laptop stolen'")
    change.add_argument("bundle", metavar="BUNDLE", help="the participant's new *.bundle.json")
    change.add_argument("--reason", required=True, help="why (logged, in the clear)")
    change.set_defaults(func=_key_change)

    trust = subparsers.add_parser(
        "trust", help="show a trust anchor and its fingerprint (compare it by phone)",
        description="The trust anchor (trust.json, written by 'exchange server init') names the "
                    "log key, the administrators and the witnesses. Pin it once, after comparing "
                    "its fingerprint with your administrator out of band.",
        epilog=_ui.epilog("exchange trust show trust.json"))
    tsub = trust.add_subparsers(dest="trust_command", metavar="SUBCOMMAND", required=True)
    tshow = tsub.add_parser("show", help="print a trust anchor's fingerprint and contents",
                            description="Print a trust anchor's fingerprint and contents.",
                            epilog=_ui.epilog("exchange trust show trust.json --json"))
    tshow.add_argument("file", metavar="FILE")
    tshow.add_argument("--json", action="store_true", help="print JSON")
    tshow.set_defaults(func=_trust_show)
