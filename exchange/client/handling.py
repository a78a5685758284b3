"""Local handling policy: which destinations must not receive files with a handling code.

By default a handling code is shown, never enforced: the receiver decides.
An office can set ``EXCHANGE_HANDLING_SHARED_DEST`` to destinations that are
shared beyond the case (a court share, a folder synchronised to a third
party), separated by ``os.pathsep``; ``pull`` then refuses to write a file
carrying any handling code (H0-H3) under one of them. Nothing is written for
a refused file; the others are pulled as usual.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from exchange.client.errors import ClientError
from exchange.crypto.manifest import HANDLING_CODES, Manifest

__all__ = ["ENV_VAR", "HandlingPolicy", "HandlingRefused"]

ENV_VAR = "EXCHANGE_HANDLING_SHARED_DEST"


class HandlingRefused(ClientError):
    """A file's handling code forbids the chosen destination under the local policy."""


@dataclass(frozen=True, slots=True)
class HandlingPolicy:
    """Destinations (resolved) that may only receive files without a handling code."""

    shared: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HandlingPolicy:
        """Return the policy set in ``ENV_VAR`` (none set: an empty policy that never refuses)."""
        value = (os.environ if env is None else env).get(ENV_VAR, "")
        return cls(tuple(Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p))

    def check(self, manifest: Manifest, evidence_id: str, dest: Path) -> None:
        """Raise :class:`HandlingRefused` if ``manifest``'s code forbids ``dest``."""
        if not manifest.handling or not self.shared:
            return
        where = Path(dest).expanduser().resolve()
        for shared in self.shared:
            if where == shared or where.is_relative_to(shared):
                raise HandlingRefused(
                    f"evidence {evidence_id} ({manifest.file_name}) carries handling code "
                    f"{manifest.handling} ({HANDLING_CODES[manifest.handling]}) and "
                    f"{where} is a shared destination under {ENV_VAR}; nothing was written",
                    "pull it into a destination that is not shared, or ask the uploader")
