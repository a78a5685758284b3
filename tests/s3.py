"""Ceph RGW for the test suite: one throwaway cluster per test process, started on first use.

Each test gets its own key prefix in one bucket, so tests never see each
other's objects and no bucket is created per test. Without Ceph the tests skip
locally and fail in CI (``EXCHANGE_REQUIRE_S3=1``).
"""

from __future__ import annotations

import asyncio
import atexit
import secrets
import sys
import threading

from exchange.storage._s3io import S3Bucket, S3Credentials, S3Location
from exchange.storage.cephcluster import CephCluster, CephUnavailable, S3Account
from tests.support import skip_or_fail

BUCKET = "exchange-tests"

_lock = threading.Lock()
_cluster: CephCluster | None = None


def cluster() -> CephCluster:
    """Return the session's cluster, starting it on first use; skip or fail without Ceph."""
    global _cluster  # noqa: PLW0603 (one cluster per test process, shared by all fixtures)
    with _lock:
        if _cluster is None:
            try:
                started = CephCluster()
            except CephUnavailable as err:
                skip_or_fail("S3", str(err))
                raise
            started.start()
            print(f"ceph cluster with rgw started in {started.start_seconds:.1f} s",
                  file=sys.stderr)
            atexit.register(started.stop)
            asyncio.run(_make_bucket(started.account))
            _cluster = started
        return _cluster


async def _make_bucket(account: S3Account | None) -> None:
    assert account is not None
    bucket = await S3Bucket.open(location("", account), credentials(account))
    try:
        await bucket.ensure_bucket()
    finally:
        await bucket.close()


def account() -> S3Account:
    """The gateway's endpoint and user."""
    found = cluster().account
    assert found is not None
    return found


def credentials(found: S3Account | None = None) -> S3Credentials:
    """The test user's key pair."""
    found = found or account()
    return S3Credentials(found.access_key, found.secret_key)


def location(prefix: str | None = None, found: S3Account | None = None) -> S3Location:
    """A location in the test bucket under a fresh (or the given) prefix."""
    chosen = f"t-{secrets.token_hex(6)}" if prefix is None else prefix
    url = f"s3://{BUCKET}/{chosen}" if chosen else f"s3://{BUCKET}"
    return S3Location.parse(url, endpoint=(found or account()).endpoint, region="default")


def stop() -> None:
    """Stop the session's cluster (at session end)."""
    global _cluster  # noqa: PLW0603
    with _lock:
        if _cluster is not None:
            _cluster.stop()
            _cluster = None
