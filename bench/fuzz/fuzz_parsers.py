"""Coverage-guided fuzzing (atheris/libFuzzer) of the parsers that take outside bytes.

Not run in CI: the bounded property-based fuzzers are ``tests/fuzz``. This is
the long-running companion; any exception other than the parser's documented
error is a finding (libFuzzer saves the crashing input). Run, for example::

    .venv/bin/pip install atheris
    .venv/bin/python bench/fuzz/fuzz_parsers.py age_header -max_total_time=600
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable
from typing import Any

Target = tuple[Callable[[bytes], object], tuple[type[BaseException], ...]]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _targets() -> dict[str, Target]:
    """Import the parsers (under atheris instrumentation) and name each fuzz target."""
    from exchange.audit import checkpoint, entry, note, receipt, tiles  # noqa: PLC0415
    from exchange.crypto import _format, age, armor, bech32, keys, keystore  # noqa: PLC0415
    from exchange.errors import AuditError, CryptoError, TransportError  # noqa: PLC0415
    from exchange.transport import client_evidence  # noqa: PLC0415
    from exchange.wire import httpsig, tus  # noqa: PLC0415

    identity = age.X25519Identity.generate()

    def decrypt(data: bytes) -> object:
        return age.decrypt(data, [identity])

    def tus_headers(data: bytes) -> object:
        text = _text(data)
        tus.parse_metadata(text)
        tus.parse_expires(text)
        return tus.parse_decimal("Upload-Length", text, maximum=1 << 40)

    def problem(data: bytes) -> object:
        return str(client_evidence.RequestRefused(400, client_evidence.problem_from_body(data)))

    def keystore_open(data: bytes) -> object:
        return keystore.open_keystore(data, "passphrase")

    return {
        "age_header": (_format.parse_header, (age.HeaderError,)),
        "age_decrypt": (decrypt, (age.AgeError,)),
        "armor": (armor.dearmor, (age.ArmorError,)),
        "age_keys": (lambda d: age.parse_identity_file(_text(d)), (age.KeyFormatError,)),
        "bech32": (lambda d: bech32.decode(_text(d)), (bech32.Bech32Error,)),
        "note": (note.parse_note, (AuditError,)),
        "checkpoint": (checkpoint.parse_checkpoint, (AuditError,)),
        "receipt": (receipt.parse_receipt, (AuditError,)),
        "entry": (entry.parse_entry, (AuditError,)),
        "tile_path": (lambda d: tiles.parse_tile_path(_text(d)), (AuditError,)),
        "bundle": (tiles.parse_bundle, (AuditError,)),
        "signature_input": (httpsig.parse_signature_input, (httpsig.HttpSigError,)),
        "signature": (httpsig.parse_signature, (httpsig.HttpSigError,)),
        "content_digest": (httpsig.parse_content_digest, (httpsig.HttpSigError,)),
        "tus": (tus_headers, (TransportError,)),
        "public_bundle": (keys.parse_bundle, (CryptoError,)),
        "keystore": (keystore_open, (CryptoError,)),
        "problem": (problem, ()),
    }


def main(argv: list[str]) -> int:
    """Fuzz the target named by ``argv[1]``; the other arguments go to libFuzzer."""
    atheris: Any = importlib.import_module("atheris")
    with atheris.instrument_imports():
        targets = _targets()
    if len(argv) < 2 or argv[1] not in targets:
        print(f"usage: {argv[0]} TARGET [libFuzzer options]; targets: {', '.join(targets)}",
              file=sys.stderr)
        return 2
    parse, allowed = targets[argv[1]]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(*allowed):
            parse(data)

    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
