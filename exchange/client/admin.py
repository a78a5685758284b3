"""Administrator operations: enrolling a participant from its public bundle (server design §4).

The enrolment is logged with the participant's public keys; right after it,
the client reads the participant back and checks the served keys against that
entry (``Client.participant``), so the administrator pins what was enrolled.
"""

from __future__ import annotations

from exchange.client.pins import VerifiedParticipant
from exchange.client.session import Client
from exchange.crypto.keys import PublicBundle

__all__ = ["enrol"]


async def enrol(client: Client, bundle: PublicBundle, role: str, *, organisation: str = "",
                country: str = "") -> VerifiedParticipant:
    """Enrol ``bundle`` with ``role`` (admins only); return the participant as verified."""
    await client.call("POST", "/v1/participants", json={
        "bundle": bundle.to_json_obj(), "role": role, "organisation": organisation,
        "country": country,
    }, doing=f"enrolling {bundle.id!r}")
    return await client.participant(bundle.id)
