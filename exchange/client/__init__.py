"""exchange.client: the client library of the evidence exchange (issue 6).

An async :class:`Client` (identity + server URL + signed requests + pinned
audit-log state) and the operations, functions taking the client first:
``enrol`` (admin), ``create_case``/``list_cases``/``show_case``/``add_member``/
``remove_member`` (cases), ``upload_file``, ``list_evidence``/
``download_evidence``, ``pull``/``watch``, ``follow``/``follow_memberships``
(live feeds) and ``deliveries`` (who of the intended recipients pulled what,
from the log).
:class:`SyncClient` wraps them for scripts. :func:`connect` (and
``SyncClient.connect()``) sets a client up exactly as the CLI does: same
settings, the running agent's identity, the same pins and checkpoints.
``exchange.client.session`` says what is verified; the README's "Python API"
section has examples (run by a test).
"""

from exchange.client.admin import enrol
from exchange.client.cases import (
    CaseSummary,
    add_member,
    case_key,
    create_case,
    list_cases,
    remove_member,
    show_case,
)
from exchange.client.config import ClientConfig, load_client_config
from exchange.client.connect import connect, open_identity
from exchange.client.deliveries import DeliveryReport, deliveries
from exchange.client.download import Evidence, PulledFile, download_evidence, list_evidence
from exchange.client.errors import (
    CheckpointRollback,
    ClientError,
    EvidenceRejected,
    KeyProblem,
    KeySubstituted,
    LogForked,
    LogKeyMissing,
    MalformedReply,
    ServerRefused,
    UploadChanged,
    VerificationFailed,
)
from exchange.client.feed import FeedEvent, follow, follow_memberships
from exchange.client.pull import PullReport, pull, watch
from exchange.client.session import Client, ClientWarning
from exchange.client.sync import SyncClient
from exchange.client.trust import VerifiedParticipant
from exchange.client.upload import UploadResult, upload_file

__all__ = [
    "CaseSummary",
    "CheckpointRollback",
    "Client",
    "ClientConfig",
    "ClientError",
    "ClientWarning",
    "DeliveryReport",
    "Evidence",
    "EvidenceRejected",
    "FeedEvent",
    "KeyProblem",
    "KeySubstituted",
    "LogForked",
    "LogKeyMissing",
    "MalformedReply",
    "PullReport",
    "PulledFile",
    "ServerRefused",
    "SyncClient",
    "UploadChanged",
    "UploadResult",
    "VerificationFailed",
    "VerifiedParticipant",
    "add_member",
    "case_key",
    "connect",
    "create_case",
    "deliveries",
    "download_evidence",
    "enrol",
    "follow",
    "follow_memberships",
    "list_cases",
    "list_evidence",
    "load_client_config",
    "open_identity",
    "pull",
    "remove_member",
    "show_case",
    "upload_file",
    "watch",
]
