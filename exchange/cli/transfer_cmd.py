"""``exchange upload``, ``files`` and ``pull``: evidence commands on the client library."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from exchange.cli import _ui
from exchange.cli._client_common import (
    ProgressBar,
    client_error,
    client_parser,
    print_json,
    run_client,
)
from exchange.cli._tree import expand
from exchange.cli._ui import CliError, ExitCode
from exchange.client import download, upload
from exchange.client.audit_report import render_deliveries
from exchange.client.deliveries import deliveries
from exchange.client.errors import ClientError, VerificationFailed
from exchange.client.pull import pull as pull_cases
from exchange.client.pull import watch
from exchange.client.session import Client
from exchange.crypto.manifest import HANDLING_CODES, ManifestError, check_handling

__all__ = ["files_work", "register"]

MIB = 1024 * 1024


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n} B"


def handling_text(code: str, note: str) -> str:
    """Return the prominent one-line form of a handling code and note ("" when neither)."""
    if not code and not note:
        return ""
    meaning = f"{code} ({HANDLING_CODES[code]})" if code else "no code"
    return f"HANDLING {meaning}" + (f": {note}" if note else "")


def _upload(args: argparse.Namespace) -> int:
    try:
        check_handling(args.handling or "", args.handling_note or "")
    except ManifestError as err:
        raise CliError(str(err), code=ExitCode.USAGE) from None
    if args.chunk_mib < 1 or args.chunk_mib > 256:
        raise CliError("--chunk-mib must be between 1 and 256", code=ExitCode.USAGE)
    items = expand(args.files, follow_symlinks=args.follow_symlinks,
                   include=args.include or (), exclude=args.exclude or ())

    async def work(client: Client) -> int:
        results = []
        for item in items:
            bar = ProgressBar(item.display, enabled=not args.json)
            try:
                result = await upload.upload_file(
                    client, args.case, item.path, chunk_bytes=args.chunk_mib * MIB,
                    progress=bar, folder=item.folder, handling=args.handling or "",
                    handling_note=args.handling_note or "",
                    limit_bytes_per_s=args.limit_rate * MIB if args.limit_rate else None)
            finally:
                bar.finish()
            resumed = f", resumed at {_size(result.resumed_from)}" if result.resumed_from else ""
            _ui.info(f"uploaded {item.display} ({_size(result.plaintext_size)}) as "
                     f"{result.evidence_id}{resumed}")
            results.append({"path": str(item.path), "file_name": result.file_name,
                            "folder": result.folder, "evidence_id": result.evidence_id,
                            "handling": result.handling,
                            "handling_note": result.handling_note,
                            "plaintext_size": result.plaintext_size,
                            "plaintext_sha256": result.plaintext_sha256,
                            "ciphertext_sha256": result.ciphertext_sha256,
                            "audit_index": result.audit_index,
                            "resumed_from": result.resumed_from})
            if not args.json:
                _ui.out(result.evidence_id)
        if args.json:
            print_json({"uploaded": results})
        return 0

    return run_client(args, work)


def _deliveries(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        report = await deliveries(client, args.case)
        if args.json:
            print_json(report.to_json())
        else:
            if not report.items:
                _ui.info(f"case {args.case} has no evidence yet")
            text = render_deliveries(report)
            if text:
                _ui.out(text.removesuffix("\n"))
        if not report.complete:
            _ui.info(f"incomplete: {report.limits}")
        return 0

    return run_client(args, work)


def _files(args: argparse.Namespace) -> int:
    if args.deliveries:
        return _deliveries(args)
    return run_client(args, files_work(args))


def files_work(args: argparse.Namespace) -> Callable[[Client], Awaitable[int]]:
    """Return the body of ``exchange files CASE [--json]`` (the agent runs it too)."""

    async def work(client: Client) -> int:
        found = await download.list_evidence(client, args.case)
        if args.json:
            print_json({"case_id": args.case, "evidence": [e.to_json() for e in found]})
            return 0
        if not found:
            _ui.info(f"case {args.case} has no evidence yet")
        for item in found:
            m = item.manifest
            name = f"{m.folder}/{m.file_name}" if m.folder else m.file_name
            _ui.out(f"{item.evidence_id}  {_size(m.plaintext_size):>12}  {m.uploaded_at[:19]}Z  "
                  f"{m.uploader:<20} {m.handling or '--':<3} {name}")
            if m.handling or m.handling_note:
                _ui.out(f"    {handling_text(m.handling, m.handling_note)}")
        return 0

    return work


def _pull(args: argparse.Namespace) -> int:
    if (args.case is None) == (not args.all):
        raise CliError("give a CASE or --all", code=ExitCode.USAGE)
    if args.file is not None and (args.all or args.watch):
        raise CliError("--file takes one CASE, without --all or --watch", code=ExitCode.USAGE)
    dest = Path(args.dest)
    case_ids = None if args.all else [args.case]

    bars: list[ProgressBar] = []  # the current file's bar, ended before any other output

    def end_bar() -> None:
        while bars:
            bars.pop().finish()

    def progress(evidence: download.Evidence) -> download.Progress:
        end_bar()
        m = evidence.manifest
        bars.append(ProgressBar(f"{m.folder}/{m.file_name}" if m.folder else m.file_name,
                                enabled=not args.json))
        return bars[-1]

    def on_file(pulled: download.PulledFile) -> None:
        end_bar()
        _ui.info(f"pulled {pulled.path.name} ({_size(pulled.plaintext_size)}) verified; "
                 f"custody record {pulled.custody_path.name}")
        if pulled.handling or pulled.handling_note:
            _ui.warning(f"{pulled.path.name}: "
                     f"{handling_text(pulled.handling, pulled.handling_note)}")
        if args.watch and not args.json:
            _ui.out(str(pulled.path))

    def on_error(evidence_id: str, err: ClientError) -> None:
        end_bar()
        cli = client_error(err)
        _ui.error(f"{evidence_id}: {cli.message}")
        for text in cli.hints:
            _ui.hint(text)

    async def work(client: Client) -> int:
        if args.watch:
            def ready(case_id: str) -> None:
                _ui.info(f"watching case {case_id} for new evidence (ctrl-c to stop)")

            def listening() -> None:
                _ui.info("watching for cases shared with you (ctrl-c to stop)")

            def on_case(case_id: str, joined: bool) -> None:
                end_bar()
                _ui.info(f"case {case_id} was shared with you (checked in its signed "
                         "statements)" if joined else f"you were removed from case {case_id}")

            await watch(client, case_ids, dest, progress=progress, on_file=on_file,
                        on_error=on_error, on_ready=ready, on_listening=listening,
                        on_case=on_case)
            return 0
        try:
            report = await pull_cases(client, case_ids, dest, progress=progress,
                                      on_file=on_file, only=args.file)
        finally:
            end_bar()
        for evidence_id, err in report.failed:
            on_error(evidence_id, err)
        if args.json:
            print_json({
                "pulled": [{"evidence_id": p.evidence_id, "path": str(p.path),
                            "file_name": p.path.name, "custody": str(p.custody_path),
                            "plaintext_size": p.plaintext_size, "resumed_from": p.resumed_from,
                            "handling": p.handling, "handling_note": p.handling_note}
                           for p in report.pulled],
                "already_pulled": report.skipped,
                "failed": [{"evidence_id": e, "error": str(err)} for e, err in report.failed],
            })
        else:
            for pulled in report.pulled:
                _ui.out(str(pulled.path))
        _ui.info(f"{len(report.pulled)} file(s) pulled, {report.skipped} already pulled, "
                 f"{len(report.failed)} failed")
        if any(isinstance(err, VerificationFailed) or client_error(err).code ==
               ExitCode.VERIFICATION_FAILED for _, err in report.failed):
            return ExitCode.VERIFICATION_FAILED
        if report.failed and all(client_error(err).code == ExitCode.ERASED
                                 for _, err in report.failed):
            return ExitCode.ERASED
        return ExitCode.ERROR if report.failed else 0

    try:
        return run_client(args, work)
    except KeyboardInterrupt:
        end_bar()
        if not args.watch:
            raise
        # Ctrl-C is how a watch ends: say so plainly, not as an error.
        _ui.info("stopped watching")
        return ExitCode.INTERRUPTED


def register(subparsers: Any) -> None:
    """Add ``upload``, ``files`` and ``pull`` to the ``exchange`` command."""
    up = client_parser(subparsers, "upload",
                 "encrypt files (or whole folders, keeping their tree) to a case and upload "
                 "them (an interrupted upload resumes when the same command is run again)",
                 "exchange upload case-1a2b3c disk.img photos.zip",
                 "exchange upload case-1a2b3c seizure-17/ --exclude '*.tmp'")
    up.add_argument("case", metavar="CASE")
    up.add_argument("files", metavar="PATH", nargs="+", type=Path,
                    help="a file, or a folder uploaded recursively; its relative paths are "
                         "sealed in each manifest (the server sees no name)")
    up.add_argument("--include", action="append", metavar="GLOB",
                    help="in folders, only files whose relative path or name matches "
                         "(repeatable)")
    up.add_argument("--exclude", action="append", metavar="GLOB",
                    help="in folders, skip files whose relative path or name matches "
                         "(repeatable)")
    up.add_argument("--follow-symlinks", action="store_true",
                    help="upload what symbolic links point to (default: refuse them)")
    up.add_argument("--chunk-mib", type=int, default=upload.DEFAULT_CHUNK_BYTES // MIB,
                    help="largest upload request in MiB (default %(default)s; memory use does "
                         "not grow with it; an interrupted request is sent again whole)")
    up.add_argument("--limit-rate", type=float, metavar="MIB_PER_S",
                    help="cap the upload bandwidth (MiB/s)")
    up.add_argument("--handling", choices=sorted(HANDLING_CODES), metavar="CODE",
                    help="handling code sealed and signed in each manifest: " + "; ".join(
                        f"{k} {v}" for k, v in HANDLING_CODES.items()))
    up.add_argument("--handling-note", metavar="TEXT",
                    help="free-text handling note, sealed and signed with the code")
    up.add_argument("--json", action="store_true", help="print the results as JSON")
    up.set_defaults(func=_upload)

    files = client_parser(subparsers, "files",
                    "list a case's evidence (names decrypted locally, signatures checked)",
                    "exchange files case-1a2b3c --json",
                    "exchange files case-1a2b3c --deliveries")
    files.add_argument("case", metavar="CASE")
    files.add_argument("--json", action="store_true", help="print a JSON array")
    files.add_argument(
        "--deliveries", action="store_true",
        help="for each file, its intended recipients (the case's members at upload time, "
             "from the signed case chain) and who of them pulled it when, from the verified "
             "audit log. Auditors and administrators read the whole log (complete answer, no "
             "file names); members may read only their own entries, so others' pulls show "
             "as not visible")
    files.set_defaults(func=_files, agent_work=files_work)

    pl = client_parser(subparsers, "pull",
                 "download, verify and decrypt everything not yet pulled, with a "
                 "chain-of-custody record beside each file",
                 "exchange pull case-1a2b3c --dest evidence/",
                 "exchange pull --all --dest evidence/ --watch")
    pl.add_argument("case", metavar="CASE", nargs="?")
    pl.add_argument("--all", action="store_true", help="every case you are a member of")
    pl.add_argument("--dest", required=True,
                    help="destination directory (files with a handling code are refused under "
                         "a shared destination listed in EXCHANGE_HANDLING_SHARED_DEST)")
    pl.add_argument("--file", metavar="ID",
                    help="pull only this evidence id of CASE (exit status 5 when it was "
                         "erased under the case's retention policy)")
    pl.add_argument("--watch", action="store_true",
                    help="keep following the live feed and pull new evidence as it arrives; "
                         "with --all, also cases shared with you from now on (picked up at "
                         "once, once their signed statements make you a member)")
    pl.add_argument("--json", action="store_true", help="print a JSON summary")
    pl.set_defaults(func=_pull)
