"""``exchange audit verify|report|receipt|check``: the auditor's commands (issue 6).

``verify`` follows restic's ``check``: one line per stage on stderr, every
problem found is counted and listed (entry index, field, expected, found) on
stdout, and the run ends with "no errors were found" or a summary and exit
status 3. The library is ``exchange.client.audit`` (mirror and verification),
``audit_report`` and ``audit_receipt``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from exchange.audit.note import NoteError
from exchange.cli import _ui
from exchange.cli._ui import CliError, ExitCode
from exchange.client.audit import (
    AuditFetchError,
    AuditRun,
    ClientLogFetcher,
    Progress,
    verify_mirror,
    verify_offline,
)
from exchange.client.audit_mirror import AuditMirror
from exchange.client.audit_receipt import check_receipt, describe_entry, fetch_receipt
from exchange.client.audit_report import (
    ReportFilter,
    build_rows,
    parse_time_bound,
    render_html,
    render_table,
    report_json,
)
from exchange.client.config import ClientConfig, load_client_config, read_anchor
from exchange.client.errors import ClientError, KeyProblem, VerificationFailed
from exchange.client.session import Client
from exchange.crypto.keys import ParticipantIdentity
from exchange.crypto.keystore import open_keystore, read_public_bundle
from exchange.keyfiles import read_secret_file

__all__ = ["register"]

T = TypeVar("T")
PASSPHRASE_ENV = "EXCHANGE_PASSPHRASE"  # noqa: S105 - a variable name
AUDIT_SUBDIR = "audit"


def _connection_options(parser: argparse.ArgumentParser, *, server: bool = True) -> None:
    if server:
        parser.add_argument("--url", help="server URL (default $EXCHANGE_URL or config file)")
        parser.add_argument("--keystore", help="your keystore (default $EXCHANGE_KEYSTORE)")
        parser.add_argument("--passphrase-file", metavar="FILE",
                            help="keystore passphrase file (default $EXCHANGE_PASSPHRASE_FILE; "
                                 "or $EXCHANGE_PASSPHRASE, or a prompt)")
    parser.add_argument("--trust", metavar="FILE",
                        help="the pinned trust anchor, trust.json (default $EXCHANGE_TRUST); "
                             "it names the log's verifier key and the administrators")
    parser.add_argument("--log-key", metavar="VKEY",
                        help="the audit log's verifier key, for logs without a trust anchor "
                             "(default $EXCHANGE_LOG_KEY)")
    parser.add_argument("--state", metavar="DIR",
                        help="where the log mirror and remembered checkpoint live (default: "
                             "the client state directory for this server and participant, "
                             "under $EXCHANGE_STATE_DIR or $XDG_STATE_HOME/exchange, + /audit)")


def register(subparsers: argparse._SubParsersAction[_ui.ArgumentParser]) -> None:
    """Add the ``audit`` command group to the top-level parser."""
    group = subparsers.add_parser(
        "audit", help="verify the audit log, report who did what, offline receipts",
        description="Verify the exchange's transparency audit log, report from it, and "
                    "fetch or check offline receipts.",
        epilog=_ui.epilog("exchange audit verify", "exchange audit report --html report.html",
                          "exchange audit receipt 42 -o entry-42.receipt",
                          "exchange audit check entry-42.receipt --log-key VKEY"),
    )
    commands = group.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    verify = commands.add_parser(
        "verify", help="mirror the log and verify all of it",
        description="Mirror the audit log into the state directory (C2SP tlog-tiles layout; "
                    "only what is new since the last run), verify the checkpoint signature "
                    "with the pinned log key, consistency with the checkpoint remembered last "
                    "time (rollback and fork detection), the Merkle tree, hash chain, "
                    "sequence, canonical encoding and every request signature against the "
                    "keys enrolled in the log. Remembers the new checkpoint only when "
                    "everything verified; otherwise saves the evidence and exits 3.",
        epilog=_ui.epilog("exchange audit verify", "exchange audit verify --json --state ./mirror",
                          "exchange audit verify --full"),
    )
    _connection_options(verify)
    verify.add_argument("--json", action="store_true", help="print one JSON summary object")
    verify.add_argument("--quiet", "-q", action="store_true", help="no stage lines")
    verify.add_argument("--full", action="store_true",
                        help="fetch every tile again, not only what is new, and compare it "
                             "with what was verified before (finds old entries altered on "
                             "the server since; like restic's --read-data)")
    verify.set_defaults(func=run_verify)

    report = commands.add_parser(
        "report", help="who did what, when (table, JSON or HTML)",
        description="Report every access in the verified log, including refused attempts: "
                    "time (UTC), actor, action, case, object, outcome and reason. Reads the "
                    "mirror that 'exchange audit verify' keeps (re-verified offline); "
                    "--update runs the verification against the server first. Times for "
                    "--since/--until are ISO 8601 (UTC unless an offset is given); --since "
                    "includes, --until excludes.",
        epilog=_ui.epilog("exchange audit report --case c-2025-001",
                          "exchange audit report --update --html report.html",
                          "exchange audit report --json --since 2025-03-01 --until 2025-03-02"),
    )
    _connection_options(report)
    report.add_argument("--case", help="only entries of this case")
    report.add_argument("--since", metavar="TIME", help="only entries at or after TIME")
    report.add_argument("--until", metavar="TIME", help="only entries before TIME")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--html", metavar="FILE",
                        help="write one self-contained HTML page with a timeline per case")
    report.add_argument("--update", action="store_true",
                        help="verify against the server first (as 'exchange audit verify')")
    report.set_defaults(func=run_report)

    receipt = commands.add_parser(
        "receipt", help="fetch an offline receipt for one entry",
        description="Fetch the tlog-proof receipt of entry INDEX and the entry itself into "
                    "one file: a standard c2sp.org/tlog-proof@v1 text whose 'extra' line "
                    "holds the entry. Anyone can check it offline with "
                    "'exchange audit check FILE --log-key VKEY'.",
        epilog=_ui.epilog("exchange audit receipt 42 -o entry-42.receipt"),
    )
    _connection_options(receipt)
    receipt.add_argument("index", type=int, metavar="INDEX", help="audit entry index")
    receipt.add_argument("-o", "--output", metavar="FILE", required=True,
                         help="receipt file to write ('-' for stdout)")
    receipt.set_defaults(func=run_receipt)

    check = commands.add_parser(
        "check", help="verify a receipt offline, without the server",
        description="Verify a receipt file offline: the checkpoint signature with the log "
                    "key, the inclusion proof of the entry, and the entry's format; then "
                    "say in plain words what the entry records.",
        epilog=_ui.epilog("exchange audit check entry-42.receipt --trust trust.json"),
    )
    check.add_argument("file", metavar="FILE", help="receipt file ('-' for stdin)")
    check.add_argument("--trust", metavar="FILE",
                       help="the pinned trust anchor, trust.json (default $EXCHANGE_TRUST); "
                            "it names the log's verifier key")
    check.add_argument("--log-key", metavar="VKEY",
                       help="the audit log's verifier key, for logs without a trust anchor "
                            "(default $EXCHANGE_LOG_KEY)")
    check.add_argument("--json", action="store_true", help="print the checked entry as JSON")
    check.set_defaults(func=run_check)


# -- configuration and connection -------------------------------------------------------


def _config(args: argparse.Namespace) -> ClientConfig:
    flags = {"url": getattr(args, "url", None), "keystore": getattr(args, "keystore", None),
             "passphrase_file": getattr(args, "passphrase_file", None), "log_key": args.log_key,
             "trust": getattr(args, "trust", None)}
    try:
        return load_client_config(flags)
    except ClientError as err:
        raise CliError(str(err), *err.hints) from None


def _require_log_key(config: ClientConfig) -> str:
    try:
        anchor = read_anchor(config)
    except ClientError as err:
        raise CliError(str(err), *err.hints, code=ExitCode.KEY_PROBLEM) from None
    if anchor is not None:
        return anchor.log_key
    if not config.log_key:
        raise CliError(
            "no verifier key for the audit log is configured, so nothing can be verified",
            "ask your administrator for the trust anchor (trust.json, written by 'exchange "
            "server init'), then pass it with --trust or set EXCHANGE_TRUST",
            code=ExitCode.KEY_PROBLEM)
    return config.log_key.strip()


def _keystore_bytes(config: ClientConfig) -> bytes:
    if config.keystore is None:
        raise CliError("no keystore given", "pass --keystore FILE or set EXCHANGE_KEYSTORE",
                       code=ExitCode.USAGE)
    try:
        return read_secret_file(config.keystore, warn=_ui.warning)
    except OSError as err:
        raise CliError(f"cannot read keystore {str(config.keystore)!r}: "
                       f"{_ui.os_reason(err)}") from None


def _identity(config: ClientConfig) -> ParticipantIdentity:
    data = _keystore_bytes(config)
    passphrase = _ui.read_passphrase(
        PASSPHRASE_ENV, confirm=False,
        passphrase_file=None if config.passphrase_file is None else str(config.passphrase_file))
    return open_keystore(data, passphrase)


def _mirror(args: argparse.Namespace, config: ClientConfig, participant: str | None) -> AuditMirror:
    if args.state:
        return AuditMirror(Path(args.state))
    if participant is None:
        participant = read_public_bundle(_keystore_bytes(config)).id
    return AuditMirror(config.state_dir(participant) / AUDIT_SUBDIR)


def _client(config: ClientConfig, identity: ParticipantIdentity) -> Client:
    if not config.url:
        raise CliError("no server URL given", "pass --url URL or set EXCHANGE_URL",
                       code=ExitCode.USAGE)
    return Client(identity, config.url, anchor=read_anchor(config),
                  state_dir=config.state_dir(identity.id), warn=_ui.warning)


def _run(coro: Callable[[], Awaitable[T]]) -> T:
    """Run ``coro`` and turn library errors into one-sentence CLI errors with exit codes."""
    async def main() -> T:
        return await coro()

    try:
        return asyncio.run(main())
    except AuditFetchError as err:
        if err.status == 401:
            raise CliError(f"the server did not accept our signature: {err.detail}",
                           "check that --keystore is the identity your administrator enrolled",
                           code=ExitCode.KEY_PROBLEM) from None
        if err.status == 403:
            raise CliError(f"the server refused to let us read {err.path}: {err.detail}",
                           "reading log entries needs the role auditor (or admin)",
                           code=ExitCode.KEY_PROBLEM) from None
        raise CliError(str(err)) from None
    except NoteError as err:
        raise CliError(f"the log key is not a valid verifier key: {err}",
                       "copy it again exactly as the administrator gave it",
                       code=ExitCode.KEY_PROBLEM) from None
    except ClientError as err:
        code = (ExitCode.VERIFICATION_FAILED if isinstance(err, VerificationFailed)
                else ExitCode.KEY_PROBLEM if isinstance(err, KeyProblem) else ExitCode.ERROR)
        raise CliError(str(err), *err.hints, code=code) from None


# -- verify ------------------------------------------------------------------------------


def _progress(quiet: bool) -> Progress:
    if quiet:
        return Progress()
    tty = sys.stderr.isatty()
    last = [0.0]

    def stage(text: str) -> None:
        _ui.info(text)

    def advance(done: int, total: int) -> None:
        now = time.monotonic()
        if tty and (done == total or now - last[0] > 0.1):
            last[0] = now
            end = "\n" if done == total else ""
            print(f"\r  {done}/{total} files", end=end, file=sys.stderr, flush=True)

    return Progress(stage=stage, advance=advance)


async def _verify(args: argparse.Namespace, config: ClientConfig, *,
                  quiet: bool) -> tuple[AuditRun, AuditMirror]:
    log_key = _require_log_key(config)
    identity = _identity(config)
    mirror = _mirror(args, config, identity.id)
    async with _client(config, identity) as client:
        client.trusted_checkpoint()  # checks the pinned log key (log.json) first
        run = await verify_mirror(ClientLogFetcher(client), mirror, log_key,
                                  progress=_progress(quiet), full=getattr(args, "full", False))
        if run.ok and mirror.checkpoint() is not None:
            # Keep the participant's own remembered checkpoint in step with the mirror:
            # a fork between the two views is itself a verification failure.
            await client.verify_checkpoint(mirror.checkpoint() or b"")
    return run, mirror


def _print_findings(run: AuditRun) -> None:
    for finding in run.findings:
        print(finding)
    if run.truncated:
        print(f"(stopped listing after {len(run.findings)} problems)")


def _fail(run: AuditRun, mirror: AuditMirror) -> CliError:
    hints = []
    if run.evidence is not None:
        hints.append(f"evidence saved in {str(run.evidence)!r} (signed checkpoints, proof, "
                     "what the server served): it proves the problem to anyone with the log key")
    if any(f.field.startswith("checkpoint.") and f.index is None for f in run.findings):
        hints.append("the server showed a history that does not extend the one verified "
                     "before: report it to the exchange operators and the other auditors")
    hints.append(f"list the problems as JSON: exchange audit verify --state "
                 f"{str(mirror.root)!r} --json")
    if run.remembered is not None:
        hints.append(f"the mirror still holds the last verified log (tree size "
                     f"{run.remembered.size}); nothing from this run was remembered")
    else:
        hints.append("nothing from this run was remembered: the mirror holds no verified log")
    return CliError(f"the audit log failed verification: {len(run.findings)} problem(s)",
                    *hints, code=ExitCode.VERIFICATION_FAILED)


def run_verify(args: argparse.Namespace) -> int:
    """``exchange audit verify``: mirror, verify, remember; exit 3 on any problem."""
    config = _config(args)
    quiet = args.json or args.quiet
    run, mirror = _run(lambda: _verify(args, config, quiet=quiet))
    if args.json:
        print(json.dumps(run.to_json(), indent=2))
    else:
        _print_findings(run)
        if run.ok and run.checkpoint is not None:
            root = run.to_json()["checkpoint"]["root"]
            print(f"log {run.checkpoint.origin}: {run.entries} entries verified, tree size "
                  f"{run.checkpoint.size}, root {root}")
            print("no errors were found")
    if not run.ok:
        raise _fail(run, mirror)
    return ExitCode.OK


# -- report ------------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    """``exchange audit report``: rows of the verified log as a table, JSON or HTML."""
    config = _config(args)
    flt = ReportFilter(
        case=args.case,
        since=None if args.since is None else _time_bound(args.since),
        until=None if args.until is None else _time_bound(args.until),
    )
    if args.update:
        run, mirror = _run(lambda: _verify(args, config, quiet=True))
        if not run.ok:
            _print_findings(run)
            raise _fail(run, mirror)
    else:
        mirror = _mirror(args, config, None)
    log_key = config.log_key.strip() if config.log_key else mirror.log_key()
    if log_key is None:
        log_key = _require_log_key(config)  # raises: no key configured nor remembered
    try:
        checkpoint, findings = verify_offline(mirror, log_key)
    except ClientError as err:
        raise CliError(str(err), "run 'exchange audit verify' first (or pass --update)",
                       code=ExitCode.KEY_PROBLEM if isinstance(err, KeyProblem)
                       else ExitCode.ERROR) from None
    if findings:
        for finding in findings:
            print(finding, file=sys.stderr)
        raise CliError("the local mirror of the audit log does not verify",
                       f"rebuild it: exchange audit verify --state {str(mirror.root)!r} --full",
                       code=ExitCode.VERIFICATION_FAILED)
    rows = build_rows(mirror.entries(checkpoint.size, committed=True), flt)
    if args.html:
        generated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        page = render_html(rows, checkpoint, log_key, flt, generated=generated)
        with _ui.Output(args.html, binary=False, mode=0o600) as out:
            out.write(page.encode("utf-8"))
        _ui.info(f"wrote {args.html} ({len(rows)} entries, tree size {checkpoint.size})")
    if args.json:
        print(json.dumps(report_json(rows, checkpoint, log_key, flt), indent=2,
                         ensure_ascii=False))
    elif not args.html:
        sys.stdout.write(render_table(rows))
        refused = sum(1 for row in rows if row.outcome != "ok")
        _ui.info(f"{len(rows)} entries ({refused} refused) from the log verified at tree "
                 f"size {checkpoint.size}")
    return ExitCode.OK


def _time_bound(text: str) -> str:
    try:
        return parse_time_bound(text)
    except ClientError as err:
        raise CliError(str(err), code=ExitCode.USAGE) from None


# -- receipts ----------------------------------------------------------------------------


def run_receipt(args: argparse.Namespace) -> int:
    """``exchange audit receipt INDEX -o FILE``: fetch, verify and save an offline receipt."""
    if args.index < 0:
        raise CliError(f"INDEX must be 0 or more, found {args.index}", code=ExitCode.USAGE)
    config = _config(args)
    log_key = _require_log_key(config)

    async def fetch() -> bytes:
        identity = _identity(config)
        mirror = _mirror(args, config, identity.id)
        async with _client(config, identity) as client:
            client.trusted_checkpoint()
            data, checked = await fetch_receipt(ClientLogFetcher(client), args.index, log_key,
                                                mirror=mirror)
        _ui.info(f"entry {checked.index} is in the log {checked.checkpoint.origin} of tree "
                 f"size {checked.checkpoint.size} (verified)")
        return data

    data = _run(fetch)
    with _ui.Output(args.output, binary=False, mode=0o600) as out:
        out.write(data)
    if args.output != "-":
        _ui.info(f"wrote {args.output}; check it anywhere with: exchange audit check "
                 f"{args.output} --log-key '{log_key}'")
    return ExitCode.OK


def run_check(args: argparse.Namespace) -> int:
    """``exchange audit check FILE``: verify a receipt offline and describe its entry."""
    config = _config(args)
    log_key = _require_log_key(config)
    with _ui.open_input(args.file) as handle:
        data = handle.read(1024 * 1024)
    try:
        checked = check_receipt(data, log_key)
    except NoteError as err:
        raise CliError(f"the log key is not a valid verifier key: {err}",
                       code=ExitCode.KEY_PROBLEM) from None
    except VerificationFailed as err:
        raise CliError(str(err), *err.hints, code=ExitCode.VERIFICATION_FAILED) from None
    except ClientError as err:
        raise CliError(str(err), *err.hints) from None
    if args.json:
        print(json.dumps({"index": checked.index, "log_key": checked.log_key,
                          "checkpoint": {"origin": checked.checkpoint.origin,
                                         "size": checked.checkpoint.size},
                          "entry": checked.entry.to_json()}, indent=2, ensure_ascii=False))
        return ExitCode.OK
    print(f"receipt verified: entry {checked.index} is in the log "
          f"{checked.checkpoint.origin} (tree size {checked.checkpoint.size}), signed by "
          f"{checked.log_key}")
    for line in describe_entry(checked.entry):
        print(_printable(line))
    return ExitCode.OK


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)
