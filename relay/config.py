"""Relay configuration: defaults, ``relay.toml`` loading and validation.

A :class:`RelayConfig` is built from defaults, then a TOML file (top-level
keys plus a ``[limits]`` table), then command-line overrides.  Unknown keys
are errors so that a typo never silently leaves a limit at its default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from protocol.errors import LocalError
from protocol.padding import MAX_ENVELOPE_SIZE

DAY = 86_400


class ConfigError(LocalError):
    """An invalid relay configuration; ``problems`` lists every mistake found."""

    code = 20

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


@dataclass(slots=True)
class Limits:
    """Quotas and rate limits; every figure is per relay process."""

    max_envelope_size: int = MAX_ENVELOPE_SIZE
    mailbox_max_messages: int = 10_000
    mailbox_max_bytes: int = 64 * 1024 * 1024
    total_max_bytes: int = 10 * 1024**3
    default_ttl: int = 21 * DAY
    max_ttl: int = 90 * DAY
    blob_ttl: int = 7 * DAY
    blob_max_chunks: int = 400
    # Clients hold one connection per mailbox they read and open short ones
    # to post (SPEC.md §7.1 "Connection roles"), and many users may share one
    # address (a Tor exit, a carrier NAT): per-address caps are high, work is
    # limited per connection (frames) and per mailbox (posts, quotas).
    max_connections: int = 10_000
    max_connections_per_ip: int = 2_048
    # Token buckets: sustained rate per second and burst size.
    connect_rate: float = 200.0  # per address
    connect_burst: int = 2_000
    frame_rate: float = 2_000.0  # per connection
    frame_burst: int = 4_000
    mailbox_post_rate: float = 50.0  # per mailbox, whoever posts
    mailbox_post_burst: int = 1_000
    blob_rate: float = 50.0
    blob_burst: int = 200
    mailboxes_per_connection: int = 1_024
    send_queue_frames: int = 1_024
    send_queue_bytes: int = 8 * 1024 * 1024
    heartbeat: float = 30.0
    shutdown_grace: float = 5.0
    # Slow clients (SPEC.md §7.11): a request line and headers must arrive
    # within header_timeout (also the idle keep-alive time); each 64 KiB piece
    # of a body within body_timeout, a whole chunk upload within upload_timeout.
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    upload_timeout: float = 120.0
    # Concurrent plain HTTP requests (blobs, metrics, decoy) and blob uploads,
    # in total, per address and (uploads) per blob capability.  Many users
    # may share one address (a Tor exit, carrier NAT): per-address caps are
    # generous, the totals are what protect the process.
    max_requests: int = 1_024
    max_requests_per_ip: int = 128
    max_uploads: int = 256
    max_uploads_per_ip: int = 64
    max_uploads_per_blob: int = 8
    # Mailboxes: in total, and created per address (token bucket).
    max_mailboxes: int = 1_000_000
    mailbox_create_rate: float = 0.2
    mailbox_create_burst: int = 500
    # Granularity (seconds) of every time stored (SPEC.md §7.12): expiry
    # times are rounded up to it, so a row tells the hour a message came.
    time_bucket: int = 3600
    # Private routing (SPEC.md §7.14).  As a forwarder: requests and bytes per
    # client address (token buckets), concurrent outbound posts, and how long
    # one may take.  As a destination: forwarded posts per mailbox (the write
    # capability) and per forwarding address.
    forward_rate: float = 2.0
    forward_burst: int = 60
    forward_bytes_rate: float = 64 * 1024.0
    forward_bytes_burst: int = 4 * 1024 * 1024
    max_forwards: int = 64
    forward_timeout: float = 15.0
    forwarded_rate: float = 20.0
    forwarded_burst: int = 200
    forwarded_ip_rate: float = 500.0
    forwarded_ip_burst: int = 2_000


@dataclass(slots=True)
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 8480
    data_dir: Path = field(
        default_factory=lambda: Path(platformdirs.user_data_dir("samizdat-relay"))
    )
    backend: str = "sqlite"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_shards: int = 4
    nats_replicas: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    prefix: str = ""
    access_token: str = ""
    metrics: bool = True
    metrics_token: str = ""
    # Listening beyond loopback, /metrics needs metrics_token and POST /blob
    # needs access_token unless these say, explicitly, that they are open.
    metrics_public: bool = False
    blobs_public: bool = False
    decoy_dir: Path | None = None
    server_header: str = "nginx"
    forwarded_for: bool = False
    debug_log: bool = False
    sqlite_synchronous: str = "FULL"
    # Private routing (SPEC.md §7.14): offer POST P/forward to clients.
    # Destinations must resolve to public addresses only, except networks in
    # forward_allow; forward_deny (networks or host names) always wins.
    # forward_source: the local address forwarded posts leave from ("": any).
    forwarding: bool = False
    forward_allow: list[str] = field(default_factory=list)
    forward_deny: list[str] = field(default_factory=list)
    # forward_ports: the ports a public destination may listen on (an address
    # in forward_allow may use any port)
    forward_ports: list[int] = field(default_factory=lambda: [80, 443, 8080, 8443])
    forward_source: str = ""
    limits: Limits = field(default_factory=Limits)

    def validate(self) -> RelayConfig:
        """Normalise and check; raises :class:`ConfigError` naming every problem."""
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems), problems)
        return self

    def problems(self) -> list[str]:
        """Every mistake in the settings (normalising what is fine), so an
        operator fixes them in one round, not one per restart."""
        out: list[str] = []
        if self.backend not in ("sqlite", "nats"):
            out.append(f"backend must be sqlite or nats, not {self.backend!r}")
        if not 0 <= self.port <= 65535:
            out.append(f"port out of range: {self.port}")
        prefix = self.prefix.strip().strip("/")
        if prefix and not all(c.isalnum() or c in "-_." for c in prefix):
            out.append("prefix may hold only letters, digits, '-', '_' and '.'")
        else:
            self.prefix = f"/{prefix}" if prefix else ""
        if (self.tls_cert is None) != (self.tls_key is None):
            out.append("tls_cert and tls_key go together")
        if self.sqlite_synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            out.append("sqlite_synchronous must be FULL, EXTRA or NORMAL")
        else:
            self.sqlite_synchronous = self.sqlite_synchronous.upper()
        if not 1 <= self.nats_shards <= 64:
            out.append("nats_shards must be in 1..64")
        if self.nats_replicas not in (1, 3, 5):
            out.append("nats_replicas must be 1, 3 or 5")
        out += _forward_problems(self)
        if self.decoy_dir is not None and not self.decoy_dir.is_dir():
            out.append(f"decoy_dir {self.decoy_dir} is not a directory")
        lim = self.limits
        bad_limits = False
        for f in dataclasses.fields(lim):
            value = getattr(lim, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                out.append(f"limits.{f.name} must be a positive number")
                bad_limits = True
        if not bad_limits:
            if not 256 <= lim.max_envelope_size <= MAX_ENVELOPE_SIZE:
                out.append(f"max_envelope_size must be in 256..{MAX_ENVELOPE_SIZE}")
            if lim.default_ttl > lim.max_ttl:
                out.append("default_ttl exceeds max_ttl")
        return out

    @property
    def loopback_only(self) -> bool:
        """True when the listen address is a loopback address (or name)."""
        host = self.host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def metrics_open(self) -> bool:
        """Whether /metrics may be served without ``metrics_token``."""
        return self.loopback_only or self.metrics_public

    @property
    def blobs_open(self) -> bool:
        """Whether ``POST P/blob`` may be served without ``access_token``."""
        return self.loopback_only or self.blobs_public

    def describe(self) -> dict[str, Any]:
        """The effective settings, secrets masked (for ``check-config``)."""
        out = dataclasses.asdict(self)
        for secret in ("access_token", "metrics_token", "prefix"):
            if out[secret]:
                out[secret] = "<set>"
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def _forward_problems(cfg: RelayConfig) -> list[str]:
    out: list[str] = []
    for name in ("forward_allow", "forward_deny"):
        entries = getattr(cfg, name)
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            out.append(f"{name} must be a list of strings")
            continue
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                host = entry.strip().lower().rstrip(".")
                if name == "forward_allow" or not _HOST.match(host):
                    what = (
                        "an address or network" if name == "forward_allow" else "a network or host"
                    )
                    out.append(f"{name}: {entry!r} is not {what}")
    ports = cfg.forward_ports
    if not isinstance(ports, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
    ):
        out.append("forward_ports must be a list of port numbers (1-65535)")
    if cfg.forward_source:
        try:
            ipaddress.ip_address(cfg.forward_source)
        except ValueError:
            out.append(f"forward_source {cfg.forward_source!r} is not an IP address")
    return out


_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")

_PATH_KEYS = {"data_dir", "tls_cert", "tls_key", "decoy_dir"}


def load_config(path: Path | None = None, **overrides: Any) -> RelayConfig:
    """Defaults, then the TOML file at ``path``, then non-None ``overrides``.
    Raises one :class:`ConfigError` listing every problem found."""
    cfg = RelayConfig()
    problems: list[str] = []
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        problems += _apply(cfg, data)
    problems += _apply(cfg, {k: v for k, v in overrides.items() if v is not None})
    problems += cfg.problems()
    if problems:
        raise ConfigError("; ".join(problems), problems)
    return cfg


def _apply(cfg: RelayConfig, data: dict[str, Any]) -> list[str]:
    """Set what is valid; return a line for each setting that is not."""
    problems: list[str] = []
    top = {f.name: f for f in dataclasses.fields(cfg)}
    lim_fields = {f.name: f for f in dataclasses.fields(cfg.limits)}
    for key, value in data.items():
        try:
            if key == "limits":
                if not isinstance(value, dict):
                    raise ConfigError("[limits] must be a table")
                for lkey, lvalue in value.items():
                    try:
                        if lkey not in lim_fields:
                            raise ConfigError(f"unknown setting limits.{lkey}")
                        typ = lim_fields[lkey].type
                        setattr(cfg.limits, lkey, _coerce(f"limits.{lkey}", lvalue, typ))
                    except ConfigError as exc:
                        problems.append(str(exc))
            elif key in top:
                if key in _PATH_KEYS:
                    path = Path(value).expanduser() if value not in ("", None) else None
                    if key == "data_dir" and path is None:
                        raise ConfigError("data_dir may not be empty")  # and stays as it was
                    setattr(cfg, key, path)
                else:
                    setattr(cfg, key, _coerce(key, value, top[key].type))
            else:
                raise ConfigError(f"unknown setting {key}")
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _coerce(name: str, value: Any, typ: Any) -> Any:
    kind = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string")
        return value
    return value
