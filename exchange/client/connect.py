"""One way in for scripts and the CLI alike: the same settings, identity and state.

:func:`connect` (async) and :meth:`SyncClient.connect` read the settings as
the CLI does (arguments, then ``EXCHANGE_*`` variables, then the config
file; :mod:`exchange.client.config`), use the identity the running
``exchange agent`` holds for the keystore (no passphrase, no Argon2), else
unlock the keystore, and keep pins and checkpoints in the CLI's per-server
state directory. So a script and ``exchange pull`` trust the same keys and
notice the same forks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from exchange.client.agent import AgentError, agent_identity
from exchange.client.config import ClientConfig, load_client_config, read_anchor
from exchange.client.errors import ClientError, KeyProblem
from exchange.client.session import Client, ClientWarning
from exchange.crypto.keys import ParticipantIdentity, PublicBundle
from exchange.crypto.keystore import (
    KeystoreError,
    KeystoreTooWeak,
    open_keystore,
    read_public_bundle,
)
from exchange.keyfiles import InsecureKeyFile, read_keystore_file

__all__ = ["AgentLookup", "Passphrase", "connect", "open_identity", "resolve"]

#: Finds the identity the agent holds for a keystore's public bundle (None: not held).
AgentLookup = Callable[[PublicBundle], ParticipantIdentity | None]
#: A passphrase, or a function returning one (called only when it is needed).
Passphrase = str | Callable[[], str] | None

PASSPHRASE_ENV = "EXCHANGE_PASSPHRASE"  # noqa: S105 - a variable name


def _warn(text: str) -> None:
    warnings.warn(text, ClientWarning, stacklevel=3)


def open_identity(keystore: Path, passphrase: Passphrase = None, *,
                  use_agent: bool = True, allow_insecure: bool = False,
                  warn: Callable[[str], None] | None = None,
                  agent: AgentLookup = agent_identity) -> ParticipantIdentity:
    """Return the identity of ``keystore``: the agent's when it holds it, else unlocked here.

    Only the keystore's public part is read to ask the agent. Without an
    agent, ``passphrase`` (or, when None, ``$EXCHANGE_PASSPHRASE``) unlocks
    the keystore. Raises :class:`KeyProblem` when the keystore cannot be read
    or opened. An agent whose socket is unsafe is not used (``warn`` says why).
    ``agent`` finds the agent's identity for the keystore's public bundle
    (the agent itself, answering a command, passes one that looks in its own
    memory instead of its socket).
    """
    try:
        # Mode and Argon2id cost are checked before any passphrase is asked for.
        data = read_keystore_file(Path(keystore), allow_insecure=allow_insecure, warn=warn)
        bundle = read_public_bundle(data)
    except KeystoreTooWeak as err:
        raise KeyProblem(f"keystore {str(keystore)!r}: {err}",
                         f"re-encrypt it with current parameters: exchange key upgrade "
                         f"{keystore}") from None
    except InsecureKeyFile as err:
        raise KeyProblem(str(err)) from None
    except (OSError, ValueError, KeystoreError) as err:
        reason = (err.strerror or type(err).__name__).lower() if isinstance(err, OSError) \
            else str(err)
        raise KeyProblem(f"cannot read keystore {str(keystore)!r}: {reason}") from None
    if use_agent:
        try:
            identity = agent(bundle)
        except AgentError as err:
            (warn or _warn)(f"not using the agent: {err}")
            identity = None
        if identity is not None:
            return identity
    secret = passphrase() if callable(passphrase) else passphrase
    if secret is None:
        secret = os.environ.get(PASSPHRASE_ENV)
    if not secret:
        raise KeyProblem(f"keystore {str(keystore)!r} needs its passphrase",
                         "start 'exchange agent', or pass the passphrase (or set "
                         "EXCHANGE_PASSPHRASE)")
    try:
        return open_keystore(data, secret)
    except KeystoreError as err:
        raise KeyProblem(f"cannot open keystore {str(keystore)!r}: {err}",
                         "check the passphrase") from None


def resolve(*, url: str | None = None, keystore: Path | str | None = None,
            trust: Path | str | None = None,
            state_dir: Path | str | None = None) -> ClientConfig:
    """Return the settings for these arguments, completed as the CLI completes them."""
    config = load_client_config({
        "url": url, "keystore": None if keystore is None else str(keystore),
        "trust": None if trust is None else str(trust),
        "state_dir": None if state_dir is None else str(state_dir)})
    if not config.url:
        raise ClientError("no server URL", "pass url= or set EXCHANGE_URL")
    if config.keystore is None:
        raise ClientError("no keystore", "pass keystore= or set EXCHANGE_KEYSTORE")
    return config


async def connect(*, url: str | None = None, keystore: Path | str | None = None,
                  passphrase: Passphrase = None, trust: Path | str | None = None,
                  state_dir: Path | str | None = None,
                  warn: Callable[[str], None] | None = None) -> Client:
    """Return a :class:`Client` set up exactly as the CLI would be (call in an event loop).

    Every argument left out comes from the environment or the config file
    (see :func:`resolve`); the identity comes from :func:`open_identity`.
    Use as ``async with await connect() as client:``.
    """
    config = resolve(url=url, keystore=keystore, trust=trust, state_dir=state_dir)
    assert config.keystore is not None and config.url is not None  # resolve() checked
    identity = open_identity(config.keystore, passphrase, warn=warn)
    return Client(identity, config.url, anchor=read_anchor(config),
                  state_dir=config.state_dir(identity.id), warn=warn)
