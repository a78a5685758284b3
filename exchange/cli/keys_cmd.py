"""``exchange keygen``, ``exchange key show|passwd|upgrade``: participant keystores and bundles.

``key passwd`` re-encrypts a keystore under a new passphrase; ``key upgrade``
re-encrypts one whose Argon2id cost is below what ``keygen`` writes (other
commands refuse such a keystore) under the same passphrase. Both leave it 0600.

Test-only: the hidden ``--test-kdf-params T:M:P`` option of ``keygen``, ``key passwd`` and
``key upgrade`` lowers
the Argon2id cost (time cost, memory in KiB, parallelism) so the suite stays
fast. It is not shown in ``--help``; real keystores use the defaults.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exchange.cli import _ui
from exchange.cli._ui import CliError, ExitCode
from exchange.crypto.keys import BundleError, ParticipantIdentity, PublicBundle, parse_bundle
from exchange.crypto.keystore import (
    DEFAULT_PARAMS,
    Argon2Params,
    KeystoreError,
    change_passphrase,
    is_keystore,
    keystore_params,
    read_public_bundle,
    reseal_keystore,
    seal_keystore,
)
from exchange.fsutil import write_atomic
from exchange.keyfiles import MAX_SECRET_FILE_BYTES, read_secret_file, write_keystore

__all__ = ["register"]

PASSPHRASE_ENV = "EXCHANGE_PASSPHRASE"  # noqa: S105 - a variable name
NEW_PASSPHRASE_ENV = "EXCHANGE_NEW_PASSPHRASE"  # noqa: S105 - a variable name
LOSS_WARNING = (
    "keep this keystore and its passphrase safe: if you lose either, everything encrypted "
    "to this identity is lost, and nobody can recover it"
)


def register(subparsers: argparse._SubParsersAction[_ui.ArgumentParser]) -> None:
    """Add ``keygen`` and the ``key`` command group to the top-level parser."""
    keygen = subparsers.add_parser(
        "keygen",
        help="create a participant keystore (signing + age keys)",
        description="Create a participant identity (Ed25519 signing key, age X25519 identity, "
        "optionally a hybrid post-quantum identity) in a keystore encrypted under a "
        f"passphrase (from --passphrase-file, ${PASSPHRASE_ENV} or a prompt). Prints the "
        "bundle fingerprint to compare with your administrator.",
        epilog=_ui.epilog(
            "exchange keygen --id alice.fr --name 'Alice Martin' -o alice.keystore "
            "--bundle-out alice.bundle.json",
        ),
    )
    keygen.add_argument("--id", required=True, help="participant id (a-z 0-9 . _ @ -)")
    keygen.add_argument("--name", help="display name (default: the id)")
    keygen.add_argument("--pq", action="store_true", help="add a hybrid post-quantum age key")
    keygen.add_argument("-o", "--output", metavar="KEYSTORE",
                        help="new keystore file (created 0600; default stdout)")
    keygen.add_argument("--bundle-out", metavar="FILE", help="also write the public bundle JSON")
    keygen.add_argument("--passphrase-file", metavar="FILE",
                        help="read the passphrase from the first line of FILE")
    keygen.add_argument("--passphrase-command", metavar="COMMAND",
                        help="run COMMAND (no shell) and use the first line it prints "
                             "($EXCHANGE_PASSPHRASE_COMMAND)")
    keygen.add_argument("--allow-weak-passphrase", action="store_true",
                        help=f"accept a passphrase shorter than {_ui.MIN_PASSPHRASE_CHARS} "
                             "characters (with a warning)")
    keygen.add_argument("--test-kdf-params", help=argparse.SUPPRESS)
    keygen.set_defaults(func=run_keygen)

    group = subparsers.add_parser(
        "key",
        help="inspect keystores and public bundles",
        description="Inspect participant keystores and public bundles.",
        epilog=_ui.epilog("exchange key show alice.keystore"),
    )
    commands = group.add_subparsers(dest="key_command", metavar="COMMAND", required=True)
    show = commands.add_parser(
        "show",
        help="print a public bundle and its fingerprints",
        description="Print the public bundle of a keystore or bundle file and its "
        "fingerprints. No passphrase is needed. The fingerprint of a keystore's bundle is "
        "only authenticated when the keystore is opened with its passphrase.",
        epilog=_ui.epilog("exchange key show alice.keystore",
                          "exchange key show --json alice.bundle.json"),
    )
    show.add_argument("path", metavar="KEYSTORE_OR_BUNDLE", help="file to read ('-' for stdin)")
    show.add_argument("--json", action="store_true", help="print the bundle as JSON")
    show.set_defaults(func=run_show)

    passwd = commands.add_parser(
        "passwd",
        help="change a keystore's passphrase (and bring its Argon2 cost up to date)",
        description="Re-encrypt a keystore under a new passphrase. The current passphrase "
        f"comes from --passphrase-file, ${PASSPHRASE_ENV} or a prompt; the new one from "
        f"--new-passphrase-file, ${NEW_PASSPHRASE_ENV} or a prompt (asked twice). The keys "
        "inside do not change, so the fingerprint and enrolment stay valid; the Argon2id "
        "parameters become the current defaults. The file is replaced atomically (0600).",
        epilog=_ui.epilog(
            "exchange key passwd ~/.config/exchange/keystore.json",
            "exchange key passwd alice.keystore --passphrase-file old.txt "
            "--new-passphrase-file new.txt",
        ),
    )
    passwd.add_argument("path", metavar="KEYSTORE", help="the keystore file to change")
    passwd.add_argument("--passphrase-file", metavar="FILE",
                        help="read the current passphrase from the first line of FILE")
    passwd.add_argument("--new-passphrase-file", metavar="FILE",
                        help="read the new passphrase from the first line of FILE")
    passwd.add_argument("--json", action="store_true",
                        help="print the old and new Argon2id parameters as JSON")
    passwd.add_argument("--test-kdf-params", help=argparse.SUPPRESS)
    passwd.set_defaults(func=run_passwd)
    upgrade = commands.add_parser(
        "upgrade",
        help="re-encrypt a keystore with current Argon2id parameters (and mode 0600)",
        description="Re-encrypt KEYSTORE under the same passphrase (from --passphrase-file, "
        f"${PASSPHRASE_ENV} or a prompt) with the Argon2id parameters keygen writes today, "
        "replacing the file atomically with mode 0600. Other commands refuse a keystore "
        "whose parameters are weaker than that. The identity and its fingerprint do not "
        "change, so nothing needs to be re-enrolled.",
        epilog=_ui.epilog("exchange key upgrade ~/.config/exchange/keystore.json"),
    )
    upgrade.add_argument("path", metavar="KEYSTORE", help="the keystore file to upgrade")
    upgrade.add_argument("--passphrase-file", metavar="FILE",
                         help="read the passphrase from the first line of FILE")
    upgrade.add_argument("--test-kdf-params", help=argparse.SUPPRESS)
    upgrade.set_defaults(func=run_upgrade)


def _kdf_params(text: str | None) -> Argon2Params:
    if text is None:
        return DEFAULT_PARAMS
    try:
        time_cost, memory_kib, parallelism = (int(part) for part in text.split(":"))
        return Argon2Params(time_cost=time_cost, memory_kib=memory_kib, parallelism=parallelism)
    except ValueError as err:
        raise CliError(
            f"invalid --test-kdf-params {text!r:.40}: {err}", code=ExitCode.USAGE
        ) from None


def run_keygen(args: argparse.Namespace) -> int:
    """Create a keystore (and optionally a bundle file) for a new participant identity."""
    params = _kdf_params(args.test_kdf_params)
    for path in (args.output, args.bundle_out):
        if path not in (None, "-") and Path(path).exists():
            raise CliError(f"output file {path!r} already exists", "choose a new file name")
    try:
        identity = ParticipantIdentity.generate(args.id, args.name, pq=args.pq)
    except BundleError as err:
        raise CliError(str(err), code=ExitCode.USAGE) from None
    passphrase = _ui.read_passphrase(
        PASSPHRASE_ENV, confirm=True, passphrase_file=args.passphrase_file,
        prompt="keystore passphrase", command=args.passphrase_command,
        command_env=_ui.PASSPHRASE_COMMAND_ENV,
    )
    _ui.check_new_passphrase(passphrase, allow_weak=args.allow_weak_passphrase)
    data = seal_keystore(identity, passphrase, params=params)
    bundle = identity.public_bundle()
    if args.output in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_new(args.output, data, keystore=True)
        _ui.info(f"wrote keystore {args.output!r}")
    if args.bundle_out is not None:
        _write_new(args.bundle_out, identity.bundle_document(), keystore=False)
        _ui.info(f"wrote public bundle {args.bundle_out!r}")
    _ui.info(f"participant {bundle.id!r} fingerprint: {bundle.fingerprint}")
    _ui.warning(LOSS_WARNING)
    return ExitCode.OK


def _params_json(params: Argon2Params) -> dict[str, int]:
    return {"time_cost": params.time_cost, "memory_kib": params.memory_kib,
            "parallelism": params.parallelism}


def run_passwd(args: argparse.Namespace) -> int:
    """Re-seal a keystore under a new passphrase with the current Argon2id parameters."""
    params = _kdf_params(args.test_kdf_params)
    path = Path(args.path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as err:
        raise CliError(f"cannot read keystore {args.path!r}: {_ui.os_reason(err)}") from None
    if not is_keystore(data):
        raise CliError(f"{args.path!r} is not a keystore")
    old_params = keystore_params(data)
    old = _ui.read_passphrase(PASSPHRASE_ENV, confirm=False,
                              passphrase_file=args.passphrase_file,
                              prompt="current keystore passphrase")
    new = _ui.read_passphrase(NEW_PASSPHRASE_ENV, confirm=True,
                              passphrase_file=args.new_passphrase_file,
                              prompt="new keystore passphrase")
    sealed = change_passphrase(data, old, new, params=params)  # WrongPassphrase: exit 4
    try:
        write_atomic(path, sealed, mode=0o600)
    except OSError as err:
        raise CliError(f"cannot replace {args.path!r}: {_ui.os_reason(err)}",
                       "the keystore was not changed") from None
    if args.json:
        _ui.print_json({"keystore": str(path), "old_kdf": _params_json(old_params),
                        "new_kdf": _params_json(params)})
    _ui.info(f"passphrase changed for {args.path!r}; argon2id t={params.time_cost} "
             f"m={params.memory_kib} KiB p={params.parallelism} (was t={old_params.time_cost} "
             f"m={old_params.memory_kib} KiB p={old_params.parallelism})")
    return ExitCode.OK


def _write_new(path: str, data: bytes, *, keystore: bool) -> None:
    try:
        if keystore:
            write_keystore(Path(path), data)
        else:
            write_atomic(Path(path), data, mode=0o644, exclusive=True)
    except FileExistsError:
        raise CliError(f"output file {path!r} already exists", "choose a new file name") from None
    except OSError as err:
        raise CliError(f"cannot create {path!r}: {_ui.os_reason(err)}") from None


def _read_public(path: str) -> tuple[PublicBundle, bool]:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_SECRET_FILE_BYTES + 1)
        else:
            with Path(path).open("rb") as handle:
                data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as err:
        raise CliError(f"cannot read {path!r}: {_ui.os_reason(err)}") from None
    if is_keystore(data):
        return read_public_bundle(data), True
    try:
        return parse_bundle(data), False
    except BundleError as err:
        raise CliError(f"{path!r} is neither a keystore nor a valid bundle: {err}") from None


def run_upgrade(args: argparse.Namespace) -> int:
    """Re-encrypt a keystore with current Argon2id parameters under the same passphrase."""
    path = Path(args.path)
    params = _kdf_params(args.test_kdf_params)
    try:
        data = read_secret_file(path, warn=_ui.warning)  # a loose mode is what we fix here
    except (OSError, ValueError) as err:
        reason = _ui.os_reason(err) if isinstance(err, OSError) else str(err)
        raise CliError(f"cannot read keystore {args.path!r}: {reason}",
                       code=ExitCode.KEY_PROBLEM) from None
    if not is_keystore(data):
        raise CliError(f"{args.path!r} is not a keystore", code=ExitCode.USAGE)
    passphrase = _ui.read_passphrase(PASSPHRASE_ENV, confirm=False,
                                     passphrase_file=args.passphrase_file,
                                     prompt="keystore passphrase")
    try:
        upgraded = reseal_keystore(data, passphrase, params=params)
    except KeystoreError as err:
        raise CliError(f"cannot open keystore {args.path!r}: {err}", "check the passphrase",
                       code=ExitCode.KEY_PROBLEM) from None
    try:
        write_atomic(path, upgraded, mode=0o600)
    except OSError as err:
        raise CliError(f"cannot replace {args.path!r}: {err.strerror or err}") from None
    _ui.info(f"re-encrypted keystore {args.path!r} with Argon2id t={params.time_cost}, "
             f"m={params.memory_kib} KiB, p={params.parallelism} (mode 0600)")
    return ExitCode.OK


def run_show(args: argparse.Namespace) -> int:
    """Print the public bundle of a keystore or bundle file."""
    bundle, from_keystore = _read_public(args.path)
    if args.json:
        sys.stdout.buffer.write(bundle.encode())
        return ExitCode.OK
    rows = [
        ("id", bundle.id),
        ("display name", bundle.display_name),
        ("fingerprint", bundle.fingerprint),
        ("signing key", f"{bundle.to_json_obj()['signing_key']}"),
        ("  fingerprint", bundle.fingerprints["signing_key"]),
        ("age recipient", bundle.age_recipient),
        ("  fingerprint", bundle.fingerprints["age_recipient"]),
        ("pq recipient", bundle.pq_recipient or "(none)"),
    ]
    if bundle.pq_recipient is not None:
        rows.append(("  fingerprint", bundle.fingerprints["pq_recipient"]))
    rows.append(("source", "keystore (public part)" if from_keystore else "bundle"))
    width = max(len(name) for name, _ in rows) + 1
    for name, value in rows:
        _ui.out(f"{name + ':':<{width}} {value}")
    return ExitCode.OK
