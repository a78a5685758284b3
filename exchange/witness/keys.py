"""The witness's cosigner key file: ``PRIVATE+KEY+<name>+<key id>+base64(0x04 ‖ seed)``.

The Go-style signed-note private key layout with the tlog-cosignature type
byte, so a witness key cannot be mistaken for a log key (type 0x01). The
file is created exclusively with mode 0600 (``exchange.keyfiles``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from exchange.audit.note import (
    SIG_COSIGNATURE_V1,
    CosignatureSigner,
    encode_private_key,
    parse_cosigner_key,
)
from exchange.keyfiles import read_secret_file, write_secret_file

__all__ = ["create_cosigner_key", "load_cosigner_key"]


def _now() -> int:
    return int(time.time())


def create_cosigner_key(path: Path, name: str) -> CosignatureSigner:
    """Create a new random cosigner key named ``name`` in ``path``; return its signer.

    Raises ``FileExistsError`` when ``path`` exists (keys are never replaced).
    """
    seed = os.urandom(32)
    signer = CosignatureSigner(name, seed, _now)  # checks the name first
    text = encode_private_key(name, signer.key_id, SIG_COSIGNATURE_V1, seed) + "\n"
    write_secret_file(path, text.encode("ascii"))
    return signer


def load_cosigner_key(path: Path) -> CosignatureSigner:
    """Return the cosigner in key file ``path`` (timestamps from the system clock)."""
    text = read_secret_file(Path(path)).decode("ascii", errors="replace").strip()
    return parse_cosigner_key(text, _now)
