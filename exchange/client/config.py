"""Client settings: flags, then ``EXCHANGE_*`` environment, then the user's config file.

Sources, the first that sets a value winning: command-line flags, the
environment (``EXCHANGE_URL``, ``EXCHANGE_KEYSTORE``, ``EXCHANGE_PASSPHRASE_FILE``,
``EXCHANGE_LOG_KEY``, ``EXCHANGE_STATE_DIR``, ``EXCHANGE_TRUST``: the pinned trust
anchor file), then
``$XDG_CONFIG_HOME/exchange/config.json`` (default ``~/.config/exchange/``).
The passphrase itself is never a flag or a config-file value: it comes from
``EXCHANGE_PASSPHRASE``, a passphrase file, or a prompt (the CLI's job).

State (pins, the last verified checkpoint, upload resume records, pull
ledgers) lives under ``$XDG_STATE_HOME/exchange/`` (default
``~/.local/state/exchange/``), one directory per server and participant.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from exchange.client.errors import ClientError, KeyProblem
from exchange.crypto.anchor import AnchorError, TrustAnchor, parse_anchor

__all__ = [
    "CONFIG_KEYS",
    "ClientConfig",
    "ConfigFileError",
    "config_file_path",
    "default_state_root",
    "load_client_config",
    "read_anchor",
    "state_dir_for",
]

#: Keys a config file may hold, and the environment variable twin of each.
CONFIG_KEYS = {
    "url": "EXCHANGE_URL",
    "keystore": "EXCHANGE_KEYSTORE",
    "passphrase_file": "EXCHANGE_PASSPHRASE_FILE",
    "log_key": "EXCHANGE_LOG_KEY",
    "state_dir": "EXCHANGE_STATE_DIR",
    "trust": "EXCHANGE_TRUST",
}
_MAX_CONFIG_BYTES = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ConfigFileError(ClientError):
    """The config file is unreadable or malformed; the message names the key."""


def _xdg(env: Mapping[str, str], name: str, fallback: str) -> Path:
    value = env.get(name, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or os.path.expanduser("~")) / fallback


def config_file_path(env: Mapping[str, str] | None = None) -> Path:
    """Return ``$XDG_CONFIG_HOME/exchange/config.json`` (default ``~/.config/...``)."""
    return _xdg(os.environ if env is None else env, "XDG_CONFIG_HOME", ".config") / (
        "exchange/config.json")


def default_state_root(env: Mapping[str, str] | None = None) -> Path:
    """Return ``$XDG_STATE_HOME/exchange`` (default ``~/.local/state/exchange``)."""
    return _xdg(os.environ if env is None else env, "XDG_STATE_HOME", ".local/state") / "exchange"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Resolved client settings (no secrets: the passphrase is read separately)."""

    url: str | None = None
    keystore: Path | None = None
    passphrase_file: Path | None = None
    log_key: str | None = None
    trust: Path | None = None
    state_root: Path

    def __post_init__(self) -> None:
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigFileError(
                    f"url must be an http(s) URL such as https://exchange.example, "
                    f"found {self.url[:80]!r}"
                )

    def state_dir(self, participant_id: str) -> Path:
        """Return the state directory of ``participant_id`` on this server.

        One directory per (server, participant) keeps pins and checkpoints of
        different logs and identities apart on a shared machine.
        """
        return state_dir_for(self.state_root, self.url or "", participant_id)


def state_dir_for(state_root: Path, url: str, participant_id: str) -> Path:
    """Return the state directory of ``participant_id`` for the server at ``url``."""
    server = urlsplit(url).netloc or "default"
    tag = hashlib.sha256(url.encode()).hexdigest()[:8]
    return state_root / f"{_UNSAFE.sub('_', server)}-{tag}" / _UNSAFE.sub("_", participant_id)


def _read_file(path: Path) -> dict[str, str]:
    try:
        data = path.read_bytes()[:_MAX_CONFIG_BYTES + 1]
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ConfigFileError(f"cannot read config file {str(path)!r}: "
                              f"{(err.strerror or 'error').lower()}") from None
    if len(data) > _MAX_CONFIG_BYTES:
        raise ConfigFileError(f"config file {str(path)!r} is larger than 64 KiB")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"config file {str(path)!r} is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ConfigFileError(f"config file {str(path)!r} must hold a JSON object")
    out: dict[str, str] = {}
    for key, value in doc.items():
        if key not in CONFIG_KEYS:
            raise ConfigFileError(
                f"config file {str(path)!r}: unknown key {key[:40]!r}, expected one of "
                f"{sorted(CONFIG_KEYS)}")
        if not isinstance(value, str):
            raise ConfigFileError(f"config file {str(path)!r}: {key} must be a string")
        out[key] = value
    return out


def load_client_config(
    flags: Mapping[str, str | None] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
) -> ClientConfig:
    """Return the settings from ``flags``, then ``env``, then the config file.

    ``flags`` maps the keys of :data:`CONFIG_KEYS` to values (None = not given);
    ``env`` defaults to ``os.environ``. Relative paths in the config file are
    taken relative to the file's directory.
    """
    env = os.environ if env is None else env
    path = config_file or config_file_path(env)
    from_file = _read_file(path)
    values: dict[str, str | None] = {}
    for key, var in CONFIG_KEYS.items():
        value = (flags or {}).get(key) or env.get(var) or None
        if value is None and key in from_file:
            value = from_file[key]
            if key in ("keystore", "passphrase_file", "state_dir", "trust") and not (
                    os.path.isabs(value)):
                value = str(path.parent / value)
        values[key] = value
    state = values["state_dir"]
    return ClientConfig(
        url=values["url"].rstrip("/") if values["url"] else None,
        keystore=Path(values["keystore"]) if values["keystore"] else None,
        passphrase_file=Path(values["passphrase_file"]) if values["passphrase_file"] else None,
        log_key=values["log_key"],
        trust=Path(values["trust"]) if values["trust"] else None,
        state_root=Path(state) if state else default_state_root(env),
    )


def read_anchor(config: ClientConfig) -> TrustAnchor | None:
    """Return the pinned trust anchor of ``config`` (None when none is configured).

    A configured ``log_key`` must be the anchor's: two sources of trust that
    disagree are an error, not a choice.
    """
    if config.trust is None:
        return None
    try:
        data = config.trust.read_bytes()[:_MAX_CONFIG_BYTES * 4 + 1]
        anchor = parse_anchor(data)
    except OSError as err:
        raise ConfigFileError(f"cannot read the trust anchor {str(config.trust)!r}: "
                              f"{(err.strerror or 'error').lower()}") from None
    except AnchorError as err:
        raise ConfigFileError(f"the trust anchor {str(config.trust)!r} is not valid: "
                              f"{err}") from None
    if config.log_key and config.log_key != anchor.log_key:
        raise KeyProblem("the configured log key is not the one the trust anchor names",
                         "drop --log-key / EXCHANGE_LOG_KEY: the anchor carries it")
    return anchor
