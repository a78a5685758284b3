"""Server configuration: one frozen value loaded once at start-up (STYLE.md item 39).

Sources, later ones winning: ``<data_dir>/server.json`` (written by ``exchange
server init``), then ``EXCHANGE_*`` environment variables, then command-line
flags. Every value is validated eagerly; errors name the key that is wrong.
The configuration is passed down explicitly, never held in a global.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exchange.audit.note import NoteError
from exchange.audit.witness_policy import Witness, WitnessPolicy
from exchange.errors import ExchangeError
from exchange.fsutil import write_atomic

__all__ = [
    "CONFIG_FILE",
    "ENV_PREFIX",
    "ConfigError",
    "Limits",
    "ServerConfig",
    "check_public_url",
    "load_config",
    "parse_witness_flag",
    "write_config_file",
]

CONFIG_FILE = "server.json"
ENV_PREFIX = "EXCHANGE_"
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB


class ConfigError(ExchangeError):
    """A configuration value is missing or invalid; the message names the key."""

    http_status = 500
    problem_type = "config"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Request limits; each default carries its reason."""

    # Signature-Input plus a few covered headers fit in 4 KiB; 16 KiB leaves room
    # for long upload metadata without letting a client make us buffer much.
    max_header_bytes: int = 16 * KIB
    # JSON bodies carry sealed metadata and envelopes, a few KiB each.
    max_json_bytes: int = 1 * MIB
    # One PATCH; clients resume after a failure, so big chunks cost little.
    max_chunk_bytes: int = 256 * MIB
    max_upload_bytes: int = 1 * TIB
    # Uploads in progress per participant: bounds open files and disk reservations.
    max_concurrent_uploads: int = 4
    # Clocks of well-run machines agree to a second; 60 s tolerates sloppy ones.
    clock_skew_s: int = 60
    # A signature is a one-shot credential: it must not live longer than 5 minutes.
    max_signature_age_s: int = 300
    upload_expiry_s: int = 7 * 24 * 3600
    # A connection must deliver a complete request head within this long of opening,
    # and may idle this long between requests: a slow-header (slowloris) client holds
    # a socket for seconds, not aiohttp's default keep-alive of an hour.
    idle_timeout_s: int = 30
    # A request body that delivers no byte for this long is abandoned: a stalled
    # client must not hold an upload's lock and a socket forever.
    body_timeout_s: int = 60

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"limits.{item.name} must be a positive integer, found {value!r}")


def check_public_url(url: str) -> str:
    """Return ``url`` without a trailing slash if it can be a public URL (else ConfigError).

    Signatures cover ``@target-uri``, built from this URL plus the path, so it
    must be scheme and authority only (``server move`` records it the same way).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"public_url must be an absolute http(s) url, found {url!r:.80}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"public_url must have no path, query or fragment, found {url!r:.80}")
    return url.rstrip("/")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything ``exchange serve`` needs to run."""

    data_dir: Path
    origin: str
    database_url: str | None = None  # None: the embedded SQLite file in data_dir
    # None: blobs in data_dir; "s3://BUCKET/PREFIX": an S3-compatible object store.
    blob_store: str | None = None
    s3_endpoint: str | None = None  # None: AWS; else e.g. https://rgw.example:7480
    s3_region: str | None = None
    # Access key and secret (two lines, mode 0600); None: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY.
    s3_credentials_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8443  # 0: any free port (printed when ready)
    public_url: str | None = None  # None: http(s)://host:port
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # In-flight requests get this long to finish after SIGTERM.
    shutdown_timeout_s: float = 30.0
    limits: Limits = field(default_factory=Limits)
    # The witnesses whose cosignatures the log collects, and the quorum that makes a
    # checkpoint the one served (match the participants' witness policy). None: unwitnessed.
    witnesses: WitnessPolicy | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or "\n" in self.origin:
            raise ConfigError(
                f"origin must be a non-empty line of text, found {self.origin!r:.60}"
            )
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError(
                f"database_url must be a postgresql:// url, found {self.database_url[:20]!r}"
            )
        if self.blob_store is not None and not self.blob_store.startswith("s3://"):
            raise ConfigError(
                f"blob_store must be an s3://BUCKET/PREFIX url, found {self.blob_store[:30]!r}"
            )
        if self.blob_store is None and (self.s3_endpoint or self.s3_credentials_file):
            raise ConfigError("s3_endpoint and s3_credentials_file need blob_store = s3://...")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be an integer in 0..65535, found {self.port!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")
        if self.public_url is not None:
            check_public_url(self.public_url)

    @property
    def tls(self) -> bool:
        """Whether the server terminates TLS itself."""
        return self.tls_cert is not None

    def base_url(self, bound_port: int | None = None) -> str:
        """Return the public base URL (no trailing slash) that signatures' @target-uri use."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        port = bound_port if bound_port is not None else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{port}"


_ENV_KEYS = {
    "database_url": "DATABASE_URL",
    "blob_store": "BLOB_STORE",
    "s3_endpoint": "S3_ENDPOINT",
    "s3_region": "S3_REGION",
    "s3_credentials_file": "S3_CREDENTIALS_FILE",
    "host": "HOST",
    "port": "PORT",
    "public_url": "PUBLIC_URL",
    "tls_cert": "TLS_CERT",
    "tls_key": "TLS_KEY",
}
_INT_KEYS = frozenset({"port"})
_PATH_KEYS = frozenset({"tls_cert", "tls_key", "s3_credentials_file"})
_FILE_KEYS = frozenset({"origin", "database_url", "host", "port", "public_url", "tls_cert",
                        "tls_key", "shutdown_timeout_s", "limits", "witnesses", "blob_store",
                        "s3_endpoint", "s3_region", "s3_credentials_file"})


def parse_witness_flag(text: str) -> Witness:
    """Return the witness in ``NAME=VKEY@URL`` (the VKEY's base64 holds no '@')."""
    name, sep, rest = text.partition("=")
    parts = rest.split("+", 2)
    if not sep or len(parts) != 3 or "@" not in parts[2]:
        raise ConfigError(f"witness {text[:80]!r} is not NAME=VKEY@URL")
    encoded, _, url = parts[2].partition("@")
    try:
        return Witness(name=name, key=f"{parts[0]}+{parts[1]}+{encoded}", url=url)
    except NoteError as err:
        raise ConfigError(f"witness {text[:80]!r}: {err}") from None


def _witnesses(
    file_value: object, flags: object, quorum: object, environ: Mapping[str, str]
) -> WitnessPolicy | None:
    """Return the witness policy: server.json's "witnesses" object, or flags/environment."""
    texts = flags if flags else environ.get(ENV_PREFIX + "WITNESSES", "").split()
    if quorum is None and environ.get(ENV_PREFIX + "WITNESS_QUORUM"):
        quorum = environ[ENV_PREFIX + "WITNESS_QUORUM"]
    try:
        if texts:
            assert isinstance(texts, list | tuple)
            listed = tuple(parse_witness_flag(str(t)) for t in texts)
            count = len(listed) if quorum is None else int(str(quorum))
            return WitnessPolicy(witnesses=listed, quorum=count)
        if file_value is None:
            return None
        policy = WitnessPolicy.from_json(file_value)
        if quorum is not None:
            policy = WitnessPolicy(witnesses=policy.witnesses, quorum=int(str(quorum)))
        return policy
    except NoteError as err:
        raise ConfigError(f"witnesses: {err}") from None
    except ValueError:
        raise ConfigError(f"witness_quorum must be an integer, found {quorum!r:.20}") from None


def _coerce(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _INT_KEYS:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be an integer, found {value!r:.40}") from None
    if key in _PATH_KEYS:
        return Path(value)
    if key == "shutdown_timeout_s":
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"shutdown_timeout_s must be a non-negative number, found {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, found {type(value).__name__}")
    return value


def _read_file(data_dir: Path) -> dict[str, Any]:
    path = data_dir / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{str(path)!r} not found: run 'exchange server init --data-dir {data_dir}' first"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{CONFIG_FILE} is not valid JSON: {err.msg} at line {err.lineno}"
        ) from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{CONFIG_FILE} must hold a JSON object")
    unknown = sorted(set(obj) - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"{CONFIG_FILE}: unknown key {unknown[0]!r:.40}")
    return obj


def _limits(raw: object) -> Limits:
    if raw is None:
        return Limits()
    if not isinstance(raw, dict):
        raise ConfigError("limits must be a JSON object")
    names = {f.name for f in dataclasses.fields(Limits)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"limits: unknown key {unknown[0]!r:.40}")
    return Limits(**raw)


def load_config(
    data_dir: Path,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Return the configuration for ``data_dir``: its file, then environment, then ``overrides``.

    ``overrides`` holds flag values; None entries mean "not given". Raises
    :class:`ConfigError` naming the bad key.
    """
    data_dir = Path(data_dir)
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    file_values = _read_file(data_dir)
    for key, value in file_values.items():
        if key not in ("limits", "witnesses"):
            values[key] = _coerce(key, value)
    flags = dict(overrides or {})
    values["witnesses"] = _witnesses(file_values.get("witnesses"), flags.pop("witnesses", None),
                                     flags.pop("witness_quorum", None), environ)
    for key, suffix in _ENV_KEYS.items():
        env_value = environ.get(ENV_PREFIX + suffix)
        if env_value:
            values[key] = _coerce(key, env_value)
    for key, value in flags.items():
        if key not in _ENV_KEYS and key != "shutdown_timeout_s":
            raise ConfigError(f"unknown override {key!r}")
        if value is not None:
            values[key] = _coerce(key, value)
    if "origin" not in values:
        raise ConfigError(f"{CONFIG_FILE} has no origin")
    return ServerConfig(data_dir=data_dir, limits=_limits(file_values.get("limits")), **values)


def write_config_file(data_dir: Path, values: Mapping[str, Any]) -> None:
    """Write ``server.json`` (mode 0600) with ``values``; refuses unknown keys."""
    unknown = sorted(set(values) - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"unknown configuration key {unknown[0]!r}")
    text = json.dumps(dict(values), indent=2, sort_keys=True) + "\n"
    write_atomic(Path(data_dir) / CONFIG_FILE, text.encode("utf-8"), mode=0o600)
