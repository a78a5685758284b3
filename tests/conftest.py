"""Suite-wide pytest configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests import s3

# A bounded, deterministic profile for CI; run with HYPOTHESIS_PROFILE=dev locally for more.
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _stop_ceph() -> Iterator[None]:
    """Stop the session's Ceph cluster (started on first use by tests.s3) at the end."""
    yield
    s3.stop()
