"""``exchange audit verify|report|receipt|check|compare``: the auditor's commands.

``verify`` follows restic's ``check``: one line per stage on stderr, every
problem found is counted and listed (entry index, field, expected, found) on
stdout, and the run ends with "no errors were found" or a summary and exit
status 3. The library is ``exchange.client.audit`` (mirror and verification),
``audit_report`` and ``audit_receipt``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from exchange.audit.fork import Verdict
from exchange.audit.note import NoteError
from exchange.audit.receipt import parse_receipt
from exchange.audit.witness_policy import WitnessPolicy, cosignature_status
from exchange.cli import _ui
from exchange.cli._client_common import add_connection_options, load_identity, print_json
from exchange.cli._keystore import read_keystore
from exchange.cli._ui import CliError, ExitCode
from exchange.client.audit import (
    AuditFetchError,
    AuditRun,
    ClientLogFetcher,
    Progress,
    verify_mirror,
    verify_offline,
)
from exchange.client.audit_compare import compare_files, parse_proof_file
from exchange.client.audit_mirror import AuditMirror
from exchange.client.audit_receipt import (
    check_receipt,
    describe_entry,
    fetch_receipt,
    mirror_entry,
)
from exchange.client.audit_report import (
    ReportFilter,
    build_rows,
    parse_time_bound,
    render_html,
    render_human,
    render_table,
    report_json,
)
from exchange.client.config import ClientConfig, load_client_config, read_anchor
from exchange.client.custody import read_record
from exchange.client.custody_check import EntryLookup, verify_custody
from exchange.client.errors import ClientError, KeyProblem, VerificationFailed
from exchange.client.problems import printable
from exchange.client.session import Client
from exchange.client.witnessing import WitnessedFetcher, check_witnessed, load_witness_policy
from exchange.crypto.anchor import MAX_ANCHOR_BYTES, AnchorError, TrustAnchor, parse_anchor
from exchange.crypto.keys import ParticipantIdentity
from exchange.crypto.keystore import read_public_bundle
from exchange.errors import ExchangeError

__all__ = ["register"]

T = TypeVar("T")
PASSPHRASE_ENV = "EXCHANGE_PASSPHRASE"  # noqa: S105 - a variable name
TRUST_ENV = "EXCHANGE_TRUST"
AUDIT_SUBDIR = "audit"


def add_offline_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of the offline checks: the anchor or log key, and the auditor's mirror."""
    parser.add_argument("--trust", metavar="FILE",
                        help="the pinned trust anchor, trust.json (default $EXCHANGE_TRUST)")
    parser.add_argument("--log-key", metavar="VKEY",
                        help="the audit log's verifier key, for logs checked without a trust "
                             "anchor (default $EXCHANGE_LOG_KEY)")
    _policy_option(parser)
    parser.add_argument("--keystore", help="your keystore, to find your log mirror "
                        "($EXCHANGE_KEYSTORE; optional)")
    parser.add_argument("--url", help="the server URL, to find your log mirror ($EXCHANGE_URL)")
    parser.add_argument("--state-dir", help="local state directory ($EXCHANGE_STATE_DIR)")
    parser.add_argument("--state", metavar="DIR", help=argparse.SUPPRESS)


def _connection_options(parser: argparse.ArgumentParser, *, server: bool = True) -> None:
    """Add the client connection options (the same front door as every client command)."""
    if server:
        add_connection_options(parser, state_alias=False)
    else:
        parser.add_argument("--trust", metavar="FILE",
                            help="the pinned trust anchor, trust.json (default $EXCHANGE_TRUST)")
        parser.add_argument("--log-key", metavar="VKEY",
                            help="the audit log's verifier key, for logs checked without a "
                                 "trust anchor (default $EXCHANGE_LOG_KEY)")
        parser.add_argument("--state-dir", help="local state directory ($EXCHANGE_STATE_DIR)")
        _policy_option(parser)
    # Before --state-dir existed here, --state named the mirror directory itself; kept
    # (hidden) so existing scripts keep their mirror.
    parser.add_argument("--state", metavar="DIR", help=argparse.SUPPRESS)


def _policy_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--witness-policy", metavar="FILE",
                        help="witness policy JSON: checkpoints need its quorum of witness "
                             "cosignatures (default $EXCHANGE_WITNESS_POLICY)")


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
                    "keys enrolled in the log. With the trust anchor (--trust), replays the "
                    "signed statements in the log from the anchor's administrators on and "
                    "checks every entry against them: keys, roles, case memberships and "
                    "epochs, refusals included. Remembers the new checkpoint only when "
                    "everything verified; otherwise saves the evidence and exits 3.",
        epilog=_ui.epilog("exchange audit verify --trust trust.json",
                          "exchange audit verify --json --state ./mirror",
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
    report.add_argument("--actor", metavar="PARTICIPANT", help="only entries of this actor")
    report.add_argument("--action", metavar="ACTION",
                        help="only this action (e.g. evidence.download) or family (evidence)")
    report.add_argument("--outcome", choices=("ok", "denied"), help="only this outcome")
    report.add_argument("--raw", action="store_true",
                        help="one line per entry with the action codes and every column")
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
        "check", help="verify a receipt or a custody record offline, without the server",
        description="Verify a receipt file offline: the checkpoint signature with the log "
                    "key, the inclusion proof of the entry, and the entry's format; then "
                    "say in plain words what the entry records. Given a *.custody.json "
                    "record, check it as 'exchange custody verify' does.",
        epilog=_ui.epilog("exchange audit check entry-42.receipt --trust trust.json",
                          "exchange audit check evidence/case-1a2b/disk.img.custody.json"),
    )
    check.add_argument("file", metavar="FILE",
                       help="receipt file or custody record ('-' for stdin)")
    add_offline_options(check)
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(func=run_check)

    compare = commands.add_parser(
        "compare", help="do two receipts or custody records show one log, or a fork?",
        description="Compare the views of the log in two files (receipts, custody records or "
                    "signed checkpoints), e.g. one from each partner of a case. Consistent: "
                    "one log extends the other (needs a consistency proof when the sizes "
                    "differ: --proof). Fork: two checkpoints of the same size with different "
                    "roots, or two different entries at one index, both signed by the log "
                    "key; the two signed checkpoints are printed as evidence. Exit status 0 "
                    "consistent, 3 fork or inconsistent, 1 undecided (a proof is needed).",
        epilog=_ui.epilog("exchange audit compare ours.custody.json theirs.custody.json",
                          "exchange audit compare a.receipt b.receipt --proof proof.json --json"),
    )
    compare.add_argument("a", metavar="A", help="first receipt, custody record or checkpoint")
    compare.add_argument("b", metavar="B", help="second receipt, custody record or checkpoint")
    compare.add_argument("--log-key", metavar="VKEY",
                         help="the audit log's verifier key (default $EXCHANGE_LOG_KEY)")
    _policy_option(compare)
    compare.add_argument("--proof", metavar="FILE",
                         help="consistency proof between the two sizes, as served by "
                              "GET /v1/audit/proof/consistency?old=M&new=N")
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.set_defaults(func=run_compare)


# -- configuration and connection -------------------------------------------------------


def _config(args: argparse.Namespace) -> ClientConfig:
    flags = {"url": getattr(args, "url", None), "keystore": getattr(args, "keystore", None),
             "passphrase_file": getattr(args, "passphrase_file", None), "log_key": args.log_key,
             "trust": getattr(args, "trust", None),
             "state_dir": getattr(args, "state_dir", None)}
    try:
        return load_client_config(flags)
    except ClientError as err:
        raise CliError(str(err), *err.hints) from None


def _anchor(args: argparse.Namespace) -> TrustAnchor | None:
    """Return the trust anchor of --trust or $EXCHANGE_TRUST (None when neither is set)."""
    path = getattr(args, "trust", None) or os.environ.get(TRUST_ENV) or None
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_ANCHOR_BYTES + 1)
    except OSError as err:
        raise CliError(f"cannot read the trust anchor {path!r}: {_ui.os_reason(err)}",
                       f"pass the file with --trust FILE or set {TRUST_ENV}",
                       code=ExitCode.KEY_PROBLEM) from None
    try:
        return parse_anchor(data)
    except AnchorError as err:
        raise CliError(f"{path!r} is not a trust anchor: {err}",
                       "copy trust.json again exactly as the administrator gave it",
                       code=ExitCode.KEY_PROBLEM) from None


def _require_log_key(config: ClientConfig, anchor: TrustAnchor | None = None) -> str:
    if anchor is None:
        try:
            anchor = read_anchor(config)
        except ClientError as err:
            raise CliError(str(err), *err.hints, code=ExitCode.KEY_PROBLEM) from None
    if not config.log_key and anchor is not None:
        return anchor.log_key
    if not config.log_key:
        raise CliError(
            "no verifier key for the audit log is configured, so nothing can be verified",
            "ask your administrator for the trust anchor (trust.json, written by 'exchange "
            "server init'), then pass it with --trust or set EXCHANGE_TRUST",
            code=ExitCode.KEY_PROBLEM)
    return config.log_key.strip()


def _keystore_bytes(args: argparse.Namespace, config: ClientConfig) -> bytes:
    if config.keystore is None:
        raise CliError("no keystore given", "pass --keystore FILE or set EXCHANGE_KEYSTORE",
                       code=ExitCode.USAGE)
    return read_keystore(config.keystore,
                         allow_insecure=getattr(args, "allow_insecure_keystore", False))


def _identity(config: ClientConfig, args: argparse.Namespace) -> ParticipantIdentity:
    if config.keystore is None:
        raise CliError("no keystore given", "pass --keystore FILE or set EXCHANGE_KEYSTORE",
                       code=ExitCode.USAGE)
    return load_identity(
        config.keystore,
        passphrase_file=None if config.passphrase_file is None else str(config.passphrase_file),
        passphrase_command=getattr(args, "passphrase_command", None),
        allow_insecure=getattr(args, "allow_insecure_keystore", False))


def _mirror(args: argparse.Namespace, config: ClientConfig, participant: str | None) -> AuditMirror:
    if args.state:
        return AuditMirror(Path(args.state))
    if participant is None:
        participant = read_public_bundle(_keystore_bytes(args, config)).id
    return AuditMirror(config.state_dir(participant) / AUDIT_SUBDIR)


def _client(config: ClientConfig, identity: ParticipantIdentity,
            policy: WitnessPolicy | None) -> Client:
    if not config.url:
        raise CliError("no server URL given", "pass --url URL or set EXCHANGE_URL",
                       code=ExitCode.USAGE)
    return Client(identity, config.url, anchor=read_anchor(config),
                  state_dir=config.state_dir(identity.id), warn=_ui.warning,
                  witness_policy=policy, log_key=config.log_key)


def _policy(args: argparse.Namespace) -> WitnessPolicy | None:
    try:
        return load_witness_policy(getattr(args, "witness_policy", None))
    except ClientError as err:
        raise CliError(str(err), *err.hints, code=ExitCode.USAGE) from None


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
            _ui.draw_progress(f"  {done}/{total} files")
            if done == total:
                _ui.end_progress()

    return Progress(stage=stage, advance=advance)


async def _verify(args: argparse.Namespace, config: ClientConfig, *, quiet: bool,
                  anchor: TrustAnchor | None) -> tuple[AuditRun, AuditMirror]:
    log_key = _require_log_key(config, anchor)
    identity = _identity(config, args)
    mirror = _mirror(args, config, identity.id)
    policy = _policy(args)
    async with _client(config, identity, policy) as client:
        client.trusted_checkpoint()  # checks the pinned log key (log.json) first
        # The server's checkpoint, verified as every client does: a rotated log key is
        # learnt here, only through a transition the previous key signed too.
        await client.checkpoint()
        fetcher = WitnessedFetcher(ClientLogFetcher(client), log_key, policy)
        run = await verify_mirror(fetcher, mirror, log_key,
                                  progress=_progress(quiet), full=getattr(args, "full", False),
                                  anchor=anchor, rotations=client.log_rotations())
        if run.ok and mirror.checkpoint() is not None:
            # Keep the participant's own remembered checkpoint in step with the mirror:
            # a fork between the two views is itself a verification failure.
            await client.verify_checkpoint(mirror.checkpoint() or b"")
    return run, mirror


def _print_findings(run: AuditRun) -> None:
    for finding in run.findings:
        _ui.out(str(finding))
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
    anchor = _anchor(args)
    quiet = args.json or args.quiet
    run, mirror = _run(lambda: _verify(args, config, quiet=quiet, anchor=anchor))
    if args.json:
        print_json(run.to_json())
    else:
        for warning in run.warnings:
            _ui.warning(f"{warning.message}; pass --trust FILE (or set {TRUST_ENV})")
        _print_findings(run)
        if run.ok and run.checkpoint is not None:
            root = run.to_json()["checkpoint"]["root"]
            print(f"log {run.checkpoint.origin}: {run.entries} entries verified, tree size "
                  f"{run.checkpoint.size}, root {root}")
            if run.anchor is not None:
                print(f"statements replayed from trust anchor {run.anchor}")
            print("no errors were found")
    if not run.ok:
        raise _fail(run, mirror)
    return ExitCode.OK


# -- report ------------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    """``exchange audit report``: rows of the verified log as a table, JSON or HTML."""
    config = _config(args)
    anchor = _anchor(args)
    flt = ReportFilter(
        case=args.case,
        since=None if args.since is None else _time_bound(args.since),
        until=None if args.until is None else _time_bound(args.until),
        actor=args.actor, action=args.action, outcome=args.outcome,
    )
    if args.update:
        run, mirror = _run(lambda: _verify(args, config, quiet=True, anchor=anchor))
        if not run.ok:
            _print_findings(run)
            raise _fail(run, mirror)
    else:
        mirror = _mirror(args, config, None)
    log_key = config.log_key.strip() if config.log_key else mirror.log_key()
    if log_key is None:
        log_key = _require_log_key(config, anchor)  # raises: no key configured nor remembered
    try:
        checkpoint, findings = verify_offline(mirror, log_key, anchor=anchor)
    except ClientError as err:
        raise CliError(str(err), "run 'exchange audit verify' first (or pass --update)",
                       code=ExitCode.KEY_PROBLEM if isinstance(err, KeyProblem)
                       else ExitCode.ERROR) from None
    if findings:
        for finding in findings:
            print(printable(str(finding)), file=sys.stderr)
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
        print_json(report_json(rows, checkpoint, log_key, flt))
    elif not args.html:
        width = min(max(shutil.get_terminal_size((100, 24)).columns, 60), 200)
        _ui.out((render_table(rows) if args.raw else render_human(rows, width=width))
                .removesuffix("\n"))
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
        identity = _identity(config, args)
        mirror = _mirror(args, config, identity.id)
        policy = _policy(args)
        async with _client(config, identity, policy) as client:
            client.trusted_checkpoint()
            data, checked = await fetch_receipt(ClientLogFetcher(client), args.index, log_key,
                                                mirror=mirror)
            if policy is not None:
                check_witnessed(parse_receipt(data).checkpoint, log_key, policy)
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
    """``exchange audit check FILE``: verify a receipt or a custody record offline."""
    config = _config(args)
    log_key = _require_log_key(config)
    with _ui.open_input(args.file) as handle:
        data = handle.read(1024 * 1024)
    if data.lstrip().startswith(b"{") and args.file != "-":
        return check_custody_files(args, [Path(args.file)])
    policy = _policy(args)
    try:
        checked = check_receipt(data, log_key)
        cosigners = None
        if policy is not None:
            note = parse_receipt(data).checkpoint
            check_witnessed(note, log_key, policy)
            cosigners = cosignature_status(note, policy.witnesses)[0]
    except NoteError as err:
        raise CliError(f"the log key is not a valid verifier key: {err}",
                       code=ExitCode.KEY_PROBLEM) from None
    except VerificationFailed as err:
        raise CliError(str(err), *err.hints, code=ExitCode.VERIFICATION_FAILED) from None
    except ClientError as err:
        raise CliError(str(err), *err.hints) from None
    if args.json:
        print_json({"index": checked.index, "log_key": checked.log_key,
                    "checkpoint": {"origin": checked.checkpoint.origin,
                                   "size": checked.checkpoint.size,
                                   "cosigned_by": cosigners},
                    "entry": checked.entry.to_json()})
        return ExitCode.OK
    _ui.out(f"receipt verified: entry {checked.index} is in the log "
          f"{checked.checkpoint.origin} (tree size {checked.checkpoint.size}), signed by "
          f"{checked.log_key}")
    if cosigners is not None:
        _ui.out(f"cosigned by the witnesses {', '.join(cosigners) or '-'} (the policy needs "
              f"{policy.quorum if policy else 0})")
    for line in describe_entry(checked.entry):
        _ui.out(line)
    return ExitCode.OK


# -- compare -----------------------------------------------------------------------------


def _read_input(path: str, what: str) -> bytes:
    try:
        with _ui.open_input(path) as handle:
            return handle.read(4 * 1024 * 1024)
    except OSError as err:
        raise CliError(f"cannot read {what} {path!r}: {_ui.os_reason(err)}") from None


def run_compare(args: argparse.Namespace) -> int:
    """``exchange audit compare A B``: consistent (0), fork (3) or undecided (1)."""
    config = _config(args)
    log_key = _require_log_key(config)
    policy = _policy(args)
    try:
        proof = None if args.proof is None else parse_proof_file(
            _read_input(args.proof, "proof"))
        compared = compare_files(_read_input(args.a, "A"), _read_input(args.b, "B"), log_key,
                                 policy=policy, proof=proof)
    except VerificationFailed as err:
        raise CliError(str(err), *err.hints, code=ExitCode.VERIFICATION_FAILED) from None
    except ClientError as err:
        raise CliError(str(err), *err.hints) from None
    result = compared.to_json()
    verdict = compared.comparison.verdict
    if args.json:
        print_json(result)
    else:
        for label in ("a", "b"):
            side = result[label]
            cosigned = "" if side["cosigned_by"] is None else \
                f", cosigned by {', '.join(side['cosigned_by']) or 'no witness of the policy'}"
            print(f"{label.upper()}: {side['origin']} tree size {side['size']} root "
                  f"{side['root']}{cosigned}")
        print(f"{verdict.value}: {compared.comparison.reason}")
        if verdict in (Verdict.FORK, Verdict.INCONSISTENT):
            print("evidence (both signed by the log key):")
            for label in ("a", "b"):
                print(f"--- {label.upper()}")
                sys.stdout.write(_printable_note(result[label]["note"]))
    if verdict == Verdict.CONSISTENT:
        return ExitCode.OK
    if verdict == Verdict.UNDECIDED:
        needs = compared.comparison.needs or (0, 0)
        raise CliError(compared.comparison.reason,
                       f"fetch it: GET /v1/audit/proof/consistency?old={needs[0]}&new={needs[1]} "
                       "(any participant may), save the JSON and pass --proof FILE")
    raise CliError(f"the two views are not of one log: {compared.comparison.reason}",
                   "keep both files: together they prove the server showed two histories",
                   code=ExitCode.VERIFICATION_FAILED)


def _printable_note(text: str) -> str:
    return "".join(printable(line) + "\n" for line in text.splitlines())


# -- custody records ---------------------------------------------------------------------


def _entry_lookup(args: argparse.Namespace, config: ClientConfig) -> EntryLookup | None:
    """Return a lookup of entries in this auditor's mirror, if there is one."""
    if not args.state and config.keystore is None:
        return None
    try:
        mirror = _mirror(args, config, None)
    except (CliError, ExchangeError, OSError):
        return None
    return lambda index: mirror_entry(mirror, index)


def check_custody_files(args: argparse.Namespace, paths: list[Path]) -> int:
    """Check custody records offline and print what each check proved; return the exit status.

    Exit 3 when a check failed (altered record or file), 1 when a receipt is
    missing, 0 otherwise ("not checked" items are listed, not failures).
    """
    config = _config(args)
    log_key = _require_log_key(config)
    lookup = _entry_lookup(args, config)
    reports = []
    for path in paths:
        try:
            record = read_record(path)
        except (OSError, ValueError) as err:
            raise CliError(f"cannot read custody record {str(path)!r}: {str(err)[:160]}"
                           ) from None
        reports.append(verify_custody(path, record, log_key, entry_lookup=lookup))
    if getattr(args, "json", False):
        print_json({"log_key": log_key, "records": [
            {"record": str(r.record), "failed": r.failed, "incomplete": r.incomplete,
             "checks": [c.to_json() for c in r.checks]} for r in reports]})
    else:
        for report in reports:
            print(f"{report.record}:")
            for check in report.checks:
                print(f"  {check.status:<11} {check.name}: {printable(check.detail)}")
    if any(r.failed for r in reports):
        _ui.error("custody check failed: the record or the file was altered")
        return ExitCode.VERIFICATION_FAILED
    if any(r.incomplete for r in reports):
        _ui.warning("incomplete: run 'exchange custody complete DIR' to fetch missing receipts")
        return ExitCode.ERROR
    _ui.info("no errors were found")
    return ExitCode.OK
