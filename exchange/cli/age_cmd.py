"""``exchange age keygen|encrypt|decrypt``: the age v1 tools, offline (C2SP age, age(1)).

Mirrors ``age`` and ``age-keygen`` so that evidence files can be handled with
or without this software, and scripts written for ``age`` work unchanged: as
``age -d`` does, ``decrypt`` detects a passphrase-encrypted file (its header's
only stanza is ``scrypt``) and only then asks for the passphrase; ``-d -p`` is
refused with age's message and exit status. Test-only: the hidden ``--scrypt-work-factor``
option lowers the passphrase cost so the suite stays fast; it is not shown in
``--help`` and real use should never set it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from exchange.cli import _ui
from exchange.cli._keystore import add_insecure_keystore_option, keystore_refusal
from exchange.cli._ui import CliError, ExitCode
from exchange.crypto.age import (
    AgeError,
    Decryptor,
    Encryptor,
    HybridIdentity,
    Identity,
    NoIdentityMatch,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    Stanza,
    X25519Identity,
    parse_identity_file,
    parse_recipient,
    pump,
)
from exchange.crypto.keystore import KeystoreError, is_keystore, open_keystore
from exchange.crypto.recipients.scrypt import STANZA_TYPE as SCRYPT_STANZA_TYPE
from exchange.keyfiles import InsecureKeyFile, read_keystore_file, write_secret_file

__all__ = ["register"]

AGE_PASSPHRASE_ENV = "EXCHANGE_AGE_PASSPHRASE"  # noqa: S105 - a variable name
AGE_PASSPHRASE_COMMAND_ENV = "EXCHANGE_AGE_PASSPHRASE_COMMAND"  # noqa: S105
KEYSTORE_PASSPHRASE_ENV = "EXCHANGE_PASSPHRASE"  # noqa: S105
DEFAULT_SCRYPT_WORK_FACTOR = 18  # age's default: about 1 s


def register(subparsers: argparse._SubParsersAction[_ui.ArgumentParser]) -> None:
    """Add the ``age`` command group to the top-level parser."""
    group = subparsers.add_parser(
        "age",
        help="encrypt, decrypt and make keys in the standard age v1 format",
        description="Offline age v1 tools, compatible with age(1) and age-keygen(1).",
        epilog=_ui.epilog(
            "exchange age keygen -o key.txt",
            "exchange age encrypt -r age1... -o evidence.zip.age evidence.zip",
            "exchange age decrypt -i key.txt -o evidence.zip evidence.zip.age",
        ),
    )
    commands = group.add_subparsers(dest="age_command", metavar="COMMAND", required=True)

    keygen = commands.add_parser(
        "keygen",
        help="generate an age identity",
        description="Generate a new age identity. The identity file gets '# created:' and "
        "'# public key:' comment lines; the recipient is also printed on stderr when the "
        "output is not a terminal.",
        epilog=_ui.epilog("exchange age keygen -o key.txt", "exchange age keygen --pq > pq.txt"),
    )
    keygen.add_argument("--pq", action="store_true", help="hybrid post-quantum (mlkem768x25519)")
    keygen.add_argument("-o", "--output", metavar="FILE",
                        help="new file (created 0600, never overwritten)")
    keygen.set_defaults(func=run_keygen)

    encrypt = commands.add_parser(
        "encrypt",
        help="encrypt a file to recipients or a passphrase",
        description="Encrypt INPUT (default stdin) to OUT (default stdout). With -p the "
        f"passphrase comes from the command in ${AGE_PASSPHRASE_COMMAND_ENV} (a password "
        f"manager), else ${AGE_PASSPHRASE_ENV} when set, else from a prompt.",
        epilog=_ui.epilog(
            "exchange age encrypt -r age1... -r age1... -o report.pdf.age report.pdf",
            "tar c photos | exchange age encrypt -R team.txt -a > photos.tar.age",
            f"{AGE_PASSPHRASE_ENV}=... exchange age encrypt -p -o notes.age notes.txt",
        ),
    )
    encrypt.add_argument("-r", "--recipient", action="append", default=[], metavar="RECIPIENT",
                         help="age1... or age1pq1... recipient (repeatable)")
    encrypt.add_argument("-R", "--recipients-file", action="append", default=[], metavar="PATH",
                         help="file with one recipient per line, '#' comments (repeatable)")
    encrypt.add_argument("-p", "--passphrase", action="store_true",
                         help=f"encrypt with a passphrase (${AGE_PASSPHRASE_ENV} or prompt)")
    encrypt.add_argument("-a", "--armor", action="store_true", help="PEM-style ASCII armor")
    encrypt.add_argument("-o", "--output", metavar="OUT", help="output file ('-' forces stdout)")
    encrypt.add_argument("input", nargs="?", metavar="INPUT", help="input file (default stdin)")
    encrypt.add_argument("--scrypt-work-factor", type=int, default=DEFAULT_SCRYPT_WORK_FACTOR,
                         help=argparse.SUPPRESS)
    encrypt.set_defaults(func=run_encrypt)

    decrypt = commands.add_parser(
        "decrypt",
        help="decrypt a file with identities or a passphrase",
        description="Decrypt INPUT (default stdin; armor is detected) to OUT (default "
        "stdout). The output file appears only if the whole file decrypts and "
        "authenticates. An identity file may also be an exchange keystore (passphrase "
        f"from ${KEYSTORE_PASSPHRASE_ENV} or a prompt). Passphrase-encrypted files are "
        "detected, as age(1) does: the passphrase is asked for (or taken from "
        f"${AGE_PASSPHRASE_COMMAND_ENV} or ${AGE_PASSPHRASE_ENV}) only when the file's "
        "only recipient is a passphrase; there is no -p.",
        epilog=_ui.epilog(
            "exchange age decrypt -i key.txt -o report.pdf report.pdf.age",
            "exchange age decrypt -o notes.txt notes.age   # asks for the passphrase",
        ),
    )
    decrypt.add_argument("-i", "--identity", action="append", default=[], metavar="PATH",
                         help="identity file or keystore (repeatable)")
    # Refused as age refuses it (scripts for age must fail the same way): not in --help.
    decrypt.add_argument("-p", "--passphrase", action="store_true", help=argparse.SUPPRESS)
    decrypt.add_argument("-o", "--output", metavar="OUT", help="output file ('-' forces stdout)")
    decrypt.add_argument("input", nargs="?", metavar="INPUT", help="input file (default stdin)")
    add_insecure_keystore_option(decrypt)
    decrypt.set_defaults(func=run_decrypt)


def _created_line() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def run_keygen(args: argparse.Namespace) -> int:
    """Write a new identity file and report its recipient."""
    identity: X25519Identity | HybridIdentity = (
        HybridIdentity.generate() if args.pq else X25519Identity.generate()
    )
    recipient = identity.recipient().to_string()
    text = (
        f"# created: {_created_line()}\n# public key: {recipient}\n{identity.to_string()}\n"
    ).encode("ascii")
    if args.output is not None and args.output != "-":
        try:
            write_secret_file(Path(args.output), text)
        except FileExistsError:
            raise CliError(
                f"output file {args.output!r} already exists", "choose a new file name"
            ) from None
        except OSError as err:
            raise CliError(f"cannot create {args.output!r}: {_ui.os_reason(err)}") from None
        print(f"Public key: {recipient}", file=sys.stderr)
        return ExitCode.OK
    mode = os.fstat(sys.stdout.fileno()).st_mode
    if stat.S_ISREG(mode) and mode & stat.S_IROTH:
        _ui.warning("writing secret key to a world-readable file")
    sys.stdout.buffer.write(text)
    sys.stdout.buffer.flush()
    if not sys.stdout.isatty():
        print(f"Public key: {recipient}", file=sys.stderr)
    return ExitCode.OK


def _recipients_from_file(path: str) -> list[Recipient]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = _ui.os_reason(err) if isinstance(err, OSError) else "not UTF-8 text"
        raise CliError(f"cannot read recipients file {path!r}: {reason}") from None
    out: list[Recipient] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(parse_recipient(line))
        except AgeError as err:
            raise CliError(f"recipients file {path!r} line {number}: {err}") from None
    if not out:
        raise CliError(f"recipients file {path!r} has no recipients")
    return out


def run_encrypt(args: argparse.Namespace) -> int:
    """Encrypt the input to the recipients (or passphrase), streaming."""
    recipients: list[Recipient] = []
    for text in args.recipient:
        try:
            recipients.append(parse_recipient(text))
        except AgeError as err:
            raise CliError(f"invalid recipient {text!r:.80}: {err}", code=ExitCode.USAGE) from None
    for path in args.recipients_file:
        recipients.extend(_recipients_from_file(path))
    if args.passphrase:
        if recipients:
            raise CliError("-p/--passphrase can't be combined with -r/-R", code=ExitCode.USAGE)
        passphrase = _ui.read_passphrase(AGE_PASSPHRASE_ENV, confirm=True,
                                         command_env=AGE_PASSPHRASE_COMMAND_ENV)
        recipients = [ScryptRecipient(passphrase, work_factor=args.scrypt_work_factor)]
    if not recipients:
        raise CliError("missing recipients", "use -r, -R or -p", code=ExitCode.USAGE)
    with _ui.open_input(args.input) as src, _ui.Output(
        args.output, binary=not args.armor, mode=0o644
    ) as out:
        pump(Encryptor(recipients, armor=args.armor), src, out.write)
    return ExitCode.OK


def _identities_from_file(path: str, *, allow_insecure: bool) -> list[Identity]:
    try:
        data = read_keystore_file(Path(path), allow_insecure=allow_insecure, warn=_ui.warning)
    except (InsecureKeyFile, KeystoreError) as err:
        raise keystore_refusal(Path(path), err) from None
    except (OSError, ValueError) as err:
        reason = _ui.os_reason(err) if isinstance(err, OSError) else str(err)
        raise CliError(f"cannot read identity file {path!r}: {reason}") from None
    if is_keystore(data):
        passphrase = _ui.read_passphrase(
            KEYSTORE_PASSPHRASE_ENV, confirm=False, prompt=f"passphrase for {path}"
        )
        return list(open_keystore(data, passphrase).age_identities())
    try:
        return list(parse_identity_file(data.decode("utf-8")))
    except UnicodeDecodeError:
        raise CliError(
            f"identity file {path!r} is not UTF-8 text", code=ExitCode.KEY_PROBLEM
        ) from None
    except AgeError as err:
        raise CliError(f"identity file {path!r}: {err}", code=ExitCode.KEY_PROBLEM) from None


class _PassphraseWhenAsked:
    """age's lazy passphrase identity: asks only when the header's only stanza is scrypt.

    The file's own header decides, so one command line decrypts both kinds of
    file and no passphrase is asked for a file encrypted to keys. (A scrypt
    stanza that is not alone is refused by the header checks before any
    identity is tried.)
    """

    def __init__(self) -> None:
        self.asked = False

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key opened with the passphrase, or None (not a passphrase file)."""
        if len(stanzas) != 1 or stanzas[0].type != SCRYPT_STANZA_TYPE:
            return None
        self.asked = True
        passphrase = _ui.read_passphrase(AGE_PASSPHRASE_ENV, confirm=False,
                                         command_env=AGE_PASSPHRASE_COMMAND_ENV)
        return ScryptIdentity(passphrase).unwrap(stanzas)


def run_decrypt(args: argparse.Namespace) -> int:
    """Decrypt the input with the identities (or passphrase), releasing authenticated data only."""
    if args.passphrase:
        # age 1.1.1's words and status (1), so scripts written for age fail the same way.
        raise CliError("-p/--passphrase can't be used with decrypt",
                       "note that password protected files are detected automatically")
    passphrase = _PassphraseWhenAsked()
    identities: list[Identity] = [passphrase]
    for path in args.identity:
        identities.extend(_identities_from_file(path,
                                                allow_insecure=args.allow_insecure_keystore))
    try:
        with _ui.open_input(args.input) as src, _ui.Output(args.output, binary=False) as out:
            pump(Decryptor(identities), src, out.write)
    except NoIdentityMatch:
        if passphrase.asked:
            raise CliError("incorrect passphrase", code=ExitCode.KEY_PROBLEM) from None
        if not args.identity:
            raise CliError("no identity matched any of the recipients",
                           "the file is not passphrase-encrypted: give its identity file "
                           "with -i", code=ExitCode.KEY_PROBLEM) from None
        raise
    return ExitCode.OK
