"""Terminal conventions shared by every command (after age's ``tui.go`` and restic's exit codes).

stdout carries data only. Human messages go to stderr as ``exchange: …``,
errors as ``exchange: error: …`` followed by optional ``exchange: hint: …``
lines, lowercase and without a final period. Commands raise :class:`CliError`;
only :func:`exchange.cli.main.main` turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import getpass
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NoReturn

from exchange.fsutil import UnsafeOutput, open_output, output_kind
from exchange.terminal import printable

PROG = "exchange"
READ_SIZE = 1024 * 1024  # 16 age chunks per read keeps syscalls and Python overhead low


class ExitCode(enum.IntEnum):
    """Process exit statuses; part of the CLI's interface (listed in every --help)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    VERIFICATION_FAILED = 3
    KEY_PROBLEM = 4
    ERASED = 5
    INTERRUPTED = 130


EXIT_CODES_HELP = """\
exit status:
  0    ok
  1    error (bad input, I/O failure)
  2    usage error
  3    verification failed (tampered or inconsistent data)
  4    authentication or key problem (no matching identity, wrong passphrase)
  5    the evidence was erased (retention policy or an owner's erase)
  130  interrupted"""


def epilog(*examples: str) -> str:
    """Return a help epilog: the exit statuses, then worked examples (help ends with them)."""
    lines = [EXIT_CODES_HELP, "", "examples:"]
    lines.extend(f"  {example}" for example in examples)
    return "\n".join(lines)


class CliError(Exception):
    """A user-facing failure: printed as ``exchange: error: <message>`` plus hints."""

    def __init__(
        self, message: str, *hints: str, code: ExitCode = ExitCode.ERROR
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hints = hints
        self.code = code


class ArgumentParser(argparse.ArgumentParser):
    """argparse with our message style: usage errors raise instead of exiting."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise CliError(message, f"see '{self.prog} --help'", code=ExitCode.USAGE)


def os_reason(err: OSError) -> str:
    """Return the OS error text in our style ("no such file or directory")."""
    return (err.strerror or type(err).__name__).lower()


_progress = {"shown": False}  # a progress line is on screen, without its newline yet


def draw_progress(line: str) -> None:
    """Redraw the progress line in place on stderr (return, text, clear to end of line)."""
    sys.stderr.write(f"\r{line}\x1b[K")
    sys.stderr.flush()
    _progress["shown"] = True


def end_progress() -> None:
    """End the progress line with a newline (it stays on screen)."""
    if _progress["shown"]:
        sys.stderr.write("\n")
        sys.stderr.flush()
    _progress["shown"] = False


def clear_progress() -> None:
    """Erase the progress line so a message can take its place (the next redraw restores it)."""
    if _progress["shown"]:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
    _progress["shown"] = False


def _emit(kind: str, message: str) -> None:
    clear_progress()
    prefix = f"{PROG}: {kind}: " if kind else f"{PROG}: "
    print(prefix + printable(message), file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    """Print human-readable ``text`` on stdout, each line escaped for the terminal.

    Listings quote what the server (or a decrypted manifest) said; a control
    sequence in a title or a name must not reach the terminal.
    """
    for line in text.split("\n"):
        print(printable(line), flush=True)


class _Recorder:
    """A text stream that appends what is written to a shared transcript, tagged by stream."""

    def __init__(self, stream: str, transcript: list[list[str]]) -> None:
        self._stream = stream
        self._transcript = transcript

    def write(self, text: str) -> int:
        if self._transcript and self._transcript[-1][0] == self._stream:
            self._transcript[-1][1] += text
        else:
            self._transcript.append([self._stream, text])
        return len(text)

    def flush(self) -> None:
        """Nothing to flush: the transcript is in memory."""

    def isatty(self) -> bool:
        """Never a terminal (the real one is the caller's, which decides nothing here)."""
        return False


@contextlib.contextmanager
def record_output() -> Iterator[list[list[str]]]:
    """Collect what the block prints on stdout and stderr, in order, as ``[stream, text]``.

    For the agent answering a command itself: the command's own code prints
    through :func:`out`, :func:`info`, :func:`print_json`..., exactly as in
    the CLI, and the caller prints the transcript. It swaps ``sys.stdout`` and
    ``sys.stderr`` for the block, so blocks must not overlap (the agent runs
    one command at a time) and nothing else may print meanwhile.
    """
    transcript: list[list[str]] = []
    saved = sys.stdout, sys.stderr
    sys.stdout = _Recorder("out", transcript)
    sys.stderr = _Recorder("err", transcript)
    try:
        yield transcript
    finally:
        sys.stdout, sys.stderr = saved


def dump_json(value: object) -> None:
    """Print ``value`` as indented JSON on stdout, non-ASCII kept, unprintables escaped.

    With ``ensure_ascii=False`` the JSON encoder leaves DEL, C1 controls and
    format characters as they are; they can only occur inside strings, so
    writing them as ``\\uXXXX`` keeps the JSON identical in meaning.
    """
    text = json.dumps(value, indent=2, ensure_ascii=False)
    print("".join(ch if ch.isprintable() or ch == "\n" else _json_escape(ch) for ch in text),
          flush=True)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code > 0xFFFF:  # a UTF-16 surrogate pair, as JSON spells characters beyond the BMP
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def error(message: str) -> None:
    """Print an error line on stderr."""
    _emit("error", message)


def hint(message: str) -> None:
    """Print a hint line on stderr."""
    _emit("hint", message)


def warning(message: str) -> None:
    """Print a warning line on stderr."""
    _emit("warning", message)


def info(message: str) -> None:
    """Print an informational line on stderr."""
    _emit("", message)


#: The version of every ``--json`` document's shape (docs/json.md).
JSON_SCHEMA_VERSION = 1


def print_json(document: dict[str, Any]) -> None:
    """Print one ``--json`` document: an object with ``"schema"`` first, then ``document``."""
    print(json.dumps({"schema": JSON_SCHEMA_VERSION, **document}, indent=2,
                     ensure_ascii=False))


PASSPHRASE_COMMAND_ENV = "EXCHANGE_PASSPHRASE_COMMAND"  # noqa: S105 - a variable name
PASSPHRASE_COMMAND_TIMEOUT_S = 120  # a password manager may wait for a touch or a pinentry
MIN_PASSPHRASE_CHARS = 12  # with Argon2id at 256 MiB, 12 random-ish characters resist guessing


def read_passphrase(
    env_var: str, *, confirm: bool, passphrase_file: str | None = None, prompt: str = "passphrase",
    command: str | None = None, command_env: str | None = None,
) -> str:
    """Return a passphrase from ``passphrase_file``, a command, ``$env_var``, or a prompt.

    The command is ``command`` or ``$command_env`` (for keystores
    ``EXCHANGE_PASSPHRASE_COMMAND``; run without a shell, the first line of its
    output is the passphrase), so a password manager can supply it. Prompts
    go to the terminal (not stdout, which may carry data) and ask twice when
    ``confirm``. Empty passphrases are refused.
    """
    command = command or (os.environ.get(command_env) if command_env else None) or None
    if passphrase_file is not None:
        try:
            text = Path(passphrase_file).read_text(encoding="utf-8")
        except OSError as err:
            raise CliError(
                f"cannot read passphrase file {passphrase_file!r}: {os_reason(err)}"
            ) from None
        value = text.splitlines()[0] if text else ""
        source = f"passphrase file {passphrase_file!r}"
    elif command is not None:
        value, source = _run_passphrase_command(command), "the passphrase command"
    elif env_var in os.environ:
        value, source = os.environ[env_var], f"${env_var}"
    else:
        value, source = _prompt(env_var, confirm=confirm, prompt=prompt), "the prompt"
    if not value:
        raise CliError(f"empty passphrase from {source}", code=ExitCode.USAGE)
    return value


def _run_passphrase_command(command: str) -> str:
    """Return the first output line of ``command`` (split like a shell, run without one)."""
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise CliError(f"cannot parse the passphrase command: {err}", code=ExitCode.USAGE) from None
    if not argv:
        raise CliError("the passphrase command is empty", code=ExitCode.USAGE)
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, check=False,
                              timeout=PASSPHRASE_COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        reason = os_reason(err) if isinstance(err, OSError) else "timed out"
        raise CliError(f"cannot run the passphrase command {argv[0]!r}: {reason}") from None
    if done.returncode != 0:
        # Never echo its output: it may be (part of) the secret.
        raise CliError(f"the passphrase command {argv[0]!r} failed with status "
                       f"{done.returncode}", code=ExitCode.KEY_PROBLEM)
    lines = done.stdout.decode("utf-8", errors="strict").splitlines()
    return lines[0] if lines else ""


def check_new_passphrase(passphrase: str, *, allow_weak: bool) -> None:
    """Refuse a new keystore passphrase shorter than ``MIN_PASSPHRASE_CHARS`` (unless allowed).

    The keystore is the only thing between a stolen laptop and the evidence;
    Argon2id slows each guess but cannot save a four-letter passphrase.
    """
    if len(passphrase) >= MIN_PASSPHRASE_CHARS:
        return
    text = (f"the passphrase has {len(passphrase)} characters; at least "
            f"{MIN_PASSPHRASE_CHARS} are needed to resist guessing if the keystore is stolen")
    if allow_weak:
        warning(text)
        return
    raise CliError(text, "use a longer passphrase (several random words work well), or "
                   "insist with --allow-weak-passphrase", code=ExitCode.USAGE)


def _prompt(env_var: str, *, confirm: bool, prompt: str) -> str:
    try:
        with open("/dev/tty", "rb"):
            pass
    except OSError:
        raise CliError(
            "no terminal to ask for the passphrase",
            f"set {env_var} or use a passphrase file",
            code=ExitCode.USAGE,
        ) from None
    first = getpass.getpass(f"{PROG}: enter {prompt}: ")
    if confirm:
        second = getpass.getpass(f"{PROG}: confirm {prompt}: ")
        if first != second:
            raise CliError("passphrases didn't match", code=ExitCode.USAGE)
    return first


@contextlib.contextmanager
def open_input(path: str | None) -> Iterator[BinaryIO]:
    """Yield the binary input: ``path``, or stdin when ``path`` is None or ``-``."""
    if path is None or path == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise CliError(f"cannot open input file {path!r}: {os_reason(err)}") from None
    with handle:
        yield handle


def read_chunks(src: BinaryIO, size: int = READ_SIZE) -> Iterator[memoryview]:
    """Yield successive reads of ``src`` as views of one reused buffer.

    Reusing the buffer avoids a fresh 1 MiB allocation (and its page faults)
    per read; each view is valid only until the next one is yielded.
    """
    readinto = getattr(src, "readinto", None)
    if readinto is None:  # pragma: no cover - every file object we open has readinto
        while data := src.read(size):
            yield memoryview(data)
        return
    view = memoryview(bytearray(size))
    while n := readinto(view):
        yield view[:n]


def _looks_binary(data: bytes | bytearray | memoryview) -> bool:
    return any((byte < 0x20 and byte not in b"\t\n\r\x1b") or byte == 0x7F for byte in data)


class Output:
    """Where command output goes: a file created atomically and lazily, or stdout.

    A file is opened (as a temporary next to ``path``) only on the first
    non-empty write, and renamed into place only when the ``with`` block ends
    without error, so a failure leaves no partial output. A character
    device, FIFO or socket is written in place; a directory, block device or
    symlink that does not lead to one of those is refused at once
    (:func:`exchange.fsutil.open_output`). ``path`` None means
    stdout, where binary data is refused when stdout is a terminal; ``-``
    forces stdout.
    """

    def __init__(self, path: str | None, *, binary: bool, mode: int = 0o600) -> None:
        self._path = None if path in (None, "-") else Path(str(path))
        self._forced_stdout = path == "-"
        self._binary = binary
        self._mode = mode
        self._stack = ExitStack()
        self._handle: BinaryIO | None = None
        if self._path is not None:
            try:
                output_kind(self._path)
            except UnsafeOutput as err:
                raise CliError(f"cannot write output: {err}",
                               "name a regular file, a new path or a device") from None
        if self._path is None and binary and not self._forced_stdout and sys.stdout.isatty():
            raise CliError(
                "refusing to output binary to the terminal",
                "did you mean to use -a/--armor? force with '-o -'",
            )

    def __enter__(self) -> Output:
        return self

    def _open(self) -> BinaryIO:
        if self._handle is None:
            if self._path is None:
                self._handle = sys.stdout.buffer
            else:
                try:
                    self._handle = self._stack.enter_context(
                        open_output(self._path, mode=self._mode)
                    )
                except UnsafeOutput as err:
                    raise CliError(f"cannot write output: {err}") from None
                except OSError as err:
                    raise CliError(
                        f"cannot create output file {str(self._path)!r}: {os_reason(err)}"
                    ) from None
        return self._handle

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` (opening the output on the first non-empty write)."""
        if not data:
            return
        if (
            self._path is None
            and not self._forced_stdout
            and not self._binary
            and sys.stdout.isatty()
            and _looks_binary(data)
        ):
            raise CliError(
                "refusing to output binary to the terminal", "force with '-o -'"
            )
        self._open().write(data)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._open()  # an empty result still creates its (empty) file
            if self._path is None:
                sys.stdout.buffer.flush()
        try:
            self._stack.__exit__(exc_type, exc, tb)
        except OSError as err:
            if exc_type is not None:
                raise
            raise CliError(f"cannot write output {str(self._path)!r}: "
                           f"{err if isinstance(err, UnsafeOutput) else os_reason(err)}") from None


def stdout_is_terminal() -> bool:
    """Return whether stdout is an interactive terminal."""
    return sys.stdout.isatty()
