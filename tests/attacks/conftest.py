"""Fixtures of the attack catalogue: real ``exchange serve`` deployments (tests/server_harness)."""

from tests.server_harness import deployment, sqlite_deployment  # noqa: F401  (fixtures)
