"""``exchange custody complete|verify|export``: keep custody records whole, check, export them.

``complete`` fetches receipts a pull could not get (the server was draining,
say) into the records under the given paths; every client command also
completes the records it noted as pending. ``verify`` checks records offline
(see :mod:`exchange.client.custody_check`) and lists exactly what was proven.
``export --format case-uco`` writes a record as a CASE/UCO JSON-LD document
(:mod:`exchange.client.custody_caseuco`) for forensic tools and courts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from exchange.cli import _ui
from exchange.cli._client_common import client_parser, print_json, run_client
from exchange.cli._ui import CliError, ExitCode
from exchange.cli.audit_cmd import add_offline_options, check_custody_files
from exchange.client.custody import complete_custody, read_record
from exchange.client.custody_caseuco import export_case_uco
from exchange.client.session import Client

__all__ = ["register"]

SUFFIX = ".custody.json"


def _records(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob(f"*{SUFFIX}") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise CliError(f"{str(path)!r} is not a file or folder", code=ExitCode.USAGE)
    if not found:
        raise CliError("no custody record (*.custody.json) found", code=ExitCode.USAGE)
    return found


def _complete(args: argparse.Namespace) -> int:
    records = _records(args.paths)

    async def work(client: Client) -> int:
        filled: dict[str, list[str]] = {}
        for path in records:
            try:
                parts = await complete_custody(client, path)
            except (OSError, ValueError) as err:
                raise CliError(f"cannot complete {str(path)!r}: {str(err)[:160]}") from None
            if parts:
                filled[str(path)] = parts
                _ui.info(f"{path}: added the {' and '.join(parts)} receipt")
        if args.json:
            print_json({"records": len(records),
                        "completed": [{"record": k, "parts": v} for k, v in filled.items()]})
        _ui.info(f"{len(records)} record(s) looked at, {len(filled)} completed")
        return 0

    return run_client(args, work)


def _verify(args: argparse.Namespace) -> int:
    return check_custody_files(args, _records(args.paths))


def _export(args: argparse.Namespace) -> int:
    try:
        record = read_record(args.record)
        document = export_case_uco(record)
    except OSError as err:
        raise CliError(f"cannot read {str(args.record)!r}: {_ui.os_reason(err)}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise CliError(f"{str(args.record)!r} is not a complete custody record: "
                       f"{str(err)[:160]}",
                       "check it with 'exchange custody verify' first") from None
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    with _ui.Output(args.output, binary=False, mode=0o644) as out:
        out.write(data)
    if args.output not in (None, "-"):
        _ui.info(f"wrote {args.output} (CASE/UCO JSON-LD, {len(document['@graph'])} objects)")
    return 0


def register(subparsers: Any) -> None:
    """Add ``custody`` and its subcommands to the ``exchange`` command."""
    custody = subparsers.add_parser(
        "custody", help="complete and verify chain-of-custody records",
        description="Chain-of-custody records (*.custody.json beside each pulled file): "
        "fetch receipts missing from them, and check them offline.",
        epilog=_ui.epilog("exchange custody complete evidence/",
                          "exchange custody verify evidence/case-1a2b/disk.img.custody.json"))
    sub = custody.add_subparsers(dest="custody_command", metavar="SUBCOMMAND", required=True)
    complete = client_parser(sub, "complete",
                             "fetch the receipts missing from custody records",
                             "exchange custody complete evidence/")
    complete.add_argument("paths", metavar="PATH", nargs="+", type=Path,
                          help="custody records, or folders searched for them")
    complete.add_argument("--json", action="store_true", help="print a JSON summary")
    complete.set_defaults(func=_complete)
    verify = sub.add_parser(
        "verify", help="check custody records offline and say what was proven",
        description="Check custody records offline: the file's size and SHA-256, the "
        "manifest signature under the uploader's recorded key, each receipt's checkpoint "
        "signature and (with an auditor's log mirror) inclusion proof and entry. Each "
        "check is listed as ok, failed, missing or not checked.",
        epilog=_ui.epilog("exchange custody verify evidence/ --log-key VKEY"))
    verify.add_argument("paths", metavar="PATH", nargs="+", type=Path,
                        help="custody records, or folders searched for them")
    add_offline_options(verify)
    verify.add_argument("--json", action="store_true", help="print the checks as JSON")
    verify.set_defaults(func=_verify)
    export = sub.add_parser(
        "export", help="write a custody record in another format (CASE/UCO JSON-LD)",
        description="Write a custody record as a CASE 1.x / UCO 1.x JSON-LD document "
        "(caseontology.org): the file and its ciphertext as observables with SHA256 hash "
        "facets, the upload and the download as investigative actions with provenance "
        "records, and the audit receipts as results. It transforms what the record says; "
        "check the record with 'exchange custody verify'. Validate the output with the CASE "
        "project's case_validate (from the case-utils package).",
        epilog=_ui.epilog("exchange custody export disk.img.custody.json --format case-uco "
                          "-o disk.img.case.jsonld"))
    export.add_argument("record", metavar="FILE", type=Path, help="a custody record")
    export.add_argument("--format", required=True, choices=("case-uco",),
                        help="output format: case-uco (CASE/UCO JSON-LD)")
    export.add_argument("-o", "--output", metavar="OUT",
                        help="write to OUT (created atomically) instead of stdout")
    export.set_defaults(func=_export)
