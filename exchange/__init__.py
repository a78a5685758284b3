"""exchange: an end-to-end encrypted evidence exchange with a verifiable audit log.

The pure cores live in :mod:`exchange.crypto` (age v1, keys, envelopes,
manifests) and :mod:`exchange.audit` (RFC 6962 trees, signed notes,
checkpoints, proofs). Everything that touches disks, databases or networks
lives in :mod:`exchange.storage`, :mod:`exchange.transport` and the CLI.
"""

__version__ = "0.1.0"
