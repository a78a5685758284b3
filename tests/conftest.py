"""Suite-wide pytest configuration."""

from __future__ import annotations

import os
import signal
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

# A suite started in the background by a non-interactive shell (`bin/test &`, nohup) inherits
# SIGINT ignored, and an ignored signal stays ignored across exec: the Ctrl-C tests' CLIs
# would never see their interrupt. A user's terminal delivers it; so give the children a
# default disposition (a handled signal is reset to the default in an exec'd child).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _stop_ceph() -> Iterator[None]:
    """Stop the session's Ceph cluster (started on first use by tests.s3) at the end."""
    yield
    s3.stop()
