"""RFC 9421 request-signature benchmark: sign_request, verify_request, signature_base.

Usage: .venv/bin/python bench/httpsig.py [--requests N] [--json]

Signs and verifies a tus-style PATCH covering our profile (@method, @target-uri,
content-type, content-length, content-digest) and times signature_base, which
the audit verifier calls once per log entry. Rates use process CPU time, so they
are single-core figures even on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange.wire.httpsig import (
    content_digest,
    sign_request,
    signature_base,
    verify_request,
)

URI = "https://exchange.example/v1/uploads/0123456789abcdef"
PROFILE = ["@method", "@target-uri", "content-type", "content-length", "content-digest"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    count: int = args.requests

    key = SigningKey(bytes(range(32)))
    public = bytes(key.verify_key)
    body = b"\x00" * 1024
    headers = [
        ("Content-Type", "application/offset+octet-stream"),
        ("Content-Length", str(len(body))),
        ("Content-Digest", content_digest(body)),
    ]

    start = time.process_time()
    signed: list[tuple[str, str]] = []
    for i in range(count):
        signed.append(
            sign_request(
                method="PATCH", target_uri=URI, headers=headers, covered_components=PROFILE,
                key=key, keyid="p-alice", created=1_800_000_000, expires=1_800_000_300,
                nonce=f"nonce-{i}",
            )
        )
    sign_s = time.process_time() - start

    start = time.process_time()
    verified = None
    for signature_input, signature in signed:
        verified = verify_request(
            method="PATCH", target_uri=URI,
            headers=[*headers, ("Signature-Input", signature_input), ("Signature", signature)],
            public_key_lookup=lambda _keyid: public, now=1_800_000_000, max_skew_s=60,
            required_components=PROFILE,
        )
    verify_s = time.process_time() - start
    assert verified is not None

    params = verified.signature_input_member.split("=", 1)[1]
    rounds = count * 20
    start = time.process_time()
    for _ in range(rounds):
        signature_base(verified.covered, params)
    base_s = time.process_time() - start

    result = {
        "sign_request_per_s": round(count / sign_s),
        "verify_request_per_s": round(count / verify_s),
        "signature_base_per_s": round(rounds / base_s),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name, rate in result.items():
            print(f"{name}: {rate:,}")


if __name__ == "__main__":
    main()
