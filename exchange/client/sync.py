"""A small synchronous wrapper around :class:`Client` for scripts.

Each method runs the matching async operation to completion on the
wrapper's own event loop. Use it as a context manager; :meth:`SyncClient.connect`
takes the CLI's settings, agent and state::

    with SyncClient.connect() as c:
        case = c.create_case("Operation Example")
        c.upload_file(case.case_id, Path("disk.img"))
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from exchange.audit.checkpoint import Checkpoint
from exchange.client import admin, cases, download, upload
from exchange.client.config import read_anchor
from exchange.client.connect import Passphrase, open_identity, resolve
from exchange.client.deliveries import DeliveryReport
from exchange.client.deliveries import deliveries as case_deliveries
from exchange.client.pull import PullReport
from exchange.client.pull import pull as pull_cases
from exchange.client.session import Client
from exchange.client.trust import VerifiedParticipant
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.keys import ParticipantIdentity, PublicBundle

__all__ = ["SyncClient"]

T = TypeVar("T")


class SyncClient:
    """Blocking façade over :class:`Client`; same constructor arguments."""

    def __init__(self, identity: ParticipantIdentity, url: str, *, anchor: TrustAnchor | None,
                 state_dir: Path, warn: Callable[[str], None] | None = None) -> None:
        self._runner = asyncio.Runner()
        self.client: Client = self._runner.run(
            self._make(identity, url, anchor=anchor, state_dir=state_dir, warn=warn))

    @staticmethod
    async def _make(identity: ParticipantIdentity, url: str, **kwargs: Any) -> Client:
        return Client(identity, url, **kwargs)  # the aiohttp session needs a running loop

    @classmethod
    def connect(cls, *, url: str | None = None, keystore: Path | str | None = None,
                passphrase: Passphrase = None, trust: Path | str | None = None,
                state_dir: Path | str | None = None,
                warn: Callable[[str], None] | None = None) -> SyncClient:
        """Return a client set up as the CLI would be; see :func:`exchange.client.connect`.

        Settings left out come from ``EXCHANGE_*`` and the config file; the
        running agent's identity is used when it holds the keystore's; pins and
        checkpoints are shared with the CLI.
        """
        config = resolve(url=url, keystore=keystore, trust=trust, state_dir=state_dir)
        assert config.keystore is not None and config.url is not None  # resolve() checked
        identity = open_identity(config.keystore, passphrase, warn=warn)
        return cls(identity, config.url, anchor=read_anchor(config),
                   state_dir=config.state_dir(identity.id), warn=warn)

    def __repr__(self) -> str:
        return f"SyncClient({self.client!r})"

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and the event loop."""
        self._run(self.client.close())
        self._runner.close()

    def checkpoint(self) -> Checkpoint:
        """See :meth:`Client.checkpoint`."""
        return self._run(self.client.checkpoint())

    def participant(self, participant_id: str) -> VerifiedParticipant:
        """See :meth:`Client.participant`."""
        return self._run(self.client.participant(participant_id))

    def receipt(self, index: int) -> bytes:
        """See :meth:`Client.receipt`."""
        return self._run(self.client.receipt(index))

    def enrol(self, bundle: PublicBundle, role: str, *, possession: bytes | None,
              organisation: str = "", country: str = "") -> VerifiedParticipant:
        """See :func:`exchange.client.admin.enrol`."""
        return self._run(admin.enrol(self.client, bundle, role, possession=possession,
                                     organisation=organisation, country=country))

    def create_case(self, title: str) -> cases.CaseSummary:
        """See :func:`exchange.client.cases.create_case`."""
        return self._run(cases.create_case(self.client, title))

    def list_cases(self) -> list[cases.CaseSummary]:
        """See :func:`exchange.client.cases.list_cases`."""
        return self._run(cases.list_cases(self.client))

    def show_case(self, case_id: str) -> cases.CaseSummary:
        """See :func:`exchange.client.cases.show_case`."""
        return self._run(cases.show_case(self.client, case_id))

    def add_member(self, case_id: str, participant_id: str) -> dict[str, Any]:
        """See :func:`exchange.client.cases.add_member`."""
        return self._run(cases.add_member(self.client, case_id, participant_id))

    def remove_member(self, case_id: str, participant_id: str) -> dict[str, Any]:
        """See :func:`exchange.client.cases.remove_member`."""
        return self._run(cases.remove_member(self.client, case_id, participant_id))

    def upload_file(self, case_id: str, path: Path, **kwargs: Any) -> upload.UploadResult:
        """See :func:`exchange.client.upload.upload_file`."""
        return self._run(upload.upload_file(self.client, case_id, path, **kwargs))

    def list_evidence(self, case_id: str) -> list[download.Evidence]:
        """See :func:`exchange.client.download.list_evidence`."""
        return self._run(download.list_evidence(self.client, case_id))

    def pull(self, case_ids: list[str] | None, dest: Path, **kwargs: Any) -> PullReport:
        """See :func:`exchange.client.pull.pull` (``progress``, ``on_file`` callbacks)."""
        return self._run(pull_cases(self.client, case_ids, dest, **kwargs))

    def deliveries(self, case_id: str) -> DeliveryReport:
        """See :func:`exchange.client.deliveries.deliveries`."""
        return self._run(case_deliveries(self.client, case_id))
