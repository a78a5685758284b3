"""``steady_heap``: the server keeps freed heap memory mapped (issue 17, upload CPU)."""

from __future__ import annotations

import platform

import pytest

from exchange.transport.server import steady_heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_settings() -> None:
    assert steady_heap() is True


def test_an_operators_malloc_environment_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert steady_heap() is False
