"""The progress line never exceeds the terminal and keeps rate and time left visible."""

from __future__ import annotations

import pytest

from exchange.cli._client_common import progress_line

MIB = 1024 * 1024


@pytest.mark.parametrize("width", [40, 60, 80, 120, 200])
@pytest.mark.parametrize("label", ["a.bin", "x" * 150, "seizure-17/phone 2/DCIM/IMG 0001.jpg"])
def test_fits_the_width_with_rate_and_time_left(width: int, label: str) -> None:
    line = progress_line(label, 3 * MIB, 10 * MIB, 2.0, width)
    assert len(line) <= width - 1
    assert line.endswith("1.5 MiB/s 5s left")


def test_long_labels_are_shortened_with_an_ellipsis_and_short_ones_kept() -> None:
    assert progress_line("x" * 150, MIB, 2 * MIB, 1.0, 80).startswith("x" * 10)
    assert "…" in progress_line("x" * 150, MIB, 2 * MIB, 1.0, 80)
    assert progress_line("a.bin", MIB, 2 * MIB, 1.0, 80).startswith("a.bin [")


def test_unknown_rate_says_so() -> None:
    assert progress_line("a", 0, MIB, 0.0, 80).endswith("? left")
