"""exchange.client: the client library of the evidence exchange (issue 6).

An async :class:`Client` (identity + server URL + signed requests + pinned
audit-log state) and the operations on it; :class:`SyncClient` wraps it for
scripts. See ``exchange.client.session`` for what is verified, and the
``operations`` modules for cases, evidence and the live feed.
"""

from exchange.client.config import ClientConfig, load_client_config
from exchange.client.errors import (
    CheckpointRollback,
    ClientError,
    EvidenceRejected,
    KeyProblem,
    KeySubstituted,
    LogForked,
    LogKeyMissing,
    ServerRefused,
    UploadChanged,
    VerificationFailed,
)
from exchange.client.pins import VerifiedParticipant
from exchange.client.session import Client, ClientWarning

__all__ = [
    "CheckpointRollback",
    "Client",
    "ClientConfig",
    "ClientError",
    "ClientWarning",
    "EvidenceRejected",
    "KeyProblem",
    "KeySubstituted",
    "LogForked",
    "LogKeyMissing",
    "ServerRefused",
    "UploadChanged",
    "VerificationFailed",
    "VerifiedParticipant",
    "load_client_config",
]
