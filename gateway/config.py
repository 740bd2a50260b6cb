"""The gateway's configuration: one TOML file, validated into typed models.

Every problem is reported with its key, and the file line where it can be found,
so ``accessgw check-config FILE`` can list them all at once. Secrets (the HMAC key,
OSDP keys, the installer password hash) are never in this file: they live in the
state directory (:mod:`gateway.state_dir`).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from gateway.errors import ConfigError

ID_PATTERN = r"^[a-z0-9-]{1,64}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]


class _Section(BaseModel):
    """Config sections forbid unknown keys: a typo must not silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """Who this gateway is and where it keeps its state."""

    id: Id
    site: Id
    state_dir: Path = Path("/var/lib/accessgw")
    language: str = "en"
    clock: Literal["ntp", "central", "trusted"] = Field(
        "ntp",
        description="how the clock is known good: ntp (timesyncd/chrony), central (time "
        "envelopes only) or trusted (an RTC; also for the demo)",
    )


def _ed25519_public_key(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be standard base64 of a raw Ed25519 public key") from exc
    if len(raw) != 32:
        raise ValueError("must be 32 bytes (a raw Ed25519 public key) in base64")
    return value


class CentralSection(_Section):
    """The central membership system: the key its envelopes are signed with."""

    public_key: Annotated[str, AfterValidator(_ed25519_public_key)] | None = None


class TlsSection(_Section):
    """TLS to the broker; a client certificate where the broker asks for one."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttSection(_Section):
    """The link to the broker (PROTOCOL.md)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    tls: TlsSection | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive: int = Field(30, ge=5, le=3600)
    session_expiry: int = Field(86_400, ge=0)
    ack_timeout: Seconds = 30
    sync_interval: Seconds = 3600
    inflight: int = Field(100, ge=1, le=10_000)
    reconnect_max: Seconds = 60
    allow_insecure: bool = Field(
        False,
        description="let `run` use plain MQTT (no TLS) to a broker on another host; "
        "anyone on the network can then read check-ins and forge commands",
    )


class LogSection(_Section):
    """What the gateway logs (``--log-level`` and ``--log-format`` win over this)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto: text on a terminal, JSON lines otherwise (the journal)"
    )
    libraries: Literal["debug", "info", "warning", "error"] = Field(
        "warning", description="pymodbus, paho, uvicorn, aiomqtt: quiet unless asked"
    )


class MetricsSection(_Section):
    """Prometheus metrics on an address of their own (not the installer's web UI)."""

    enabled: bool = False
    listen: str = "127.0.0.1"
    port: int = Field(9464, ge=1, le=65535)
    token_file: Path | None = Field(
        None, description="a file holding the bearer token scrapers must send (optional)"
    )


class JournalSection(_Section):
    """How much the journal may hold while the central system does not acknowledge."""

    max_pending: int = Field(
        250_000,
        ge=100,
        le=50_000_000,
        description="records not yet acknowledged; a warning at 80 %; at the bound new "
        "decisions are refused (nothing journalled is ever dropped)",
    )


class HomeAssistantSection(_Section):
    """Home Assistant MQTT discovery: doors, readers, occupancy and decisions as entities."""

    enabled: bool = False
    discovery_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "homeassistant"
    commands: bool = Field(
        False,
        description="offer unlock/lock buttons; only with a broker that signs users in "
        "and restricts who may write the command topics",
    )


class ReaderConfig(_Section):
    """A reader at a door: a firmware profile plus where it is plugged in."""

    id: Id
    profile: str
    door: Id
    port: str | None = None
    address: int | None = Field(None, ge=0, le=126)
    repeat_guard: float = Field(3.0, ge=0, le=3600)
    options: dict[str, Any] = Field(default_factory=dict)
    feedback: ReaderFeedback | None = Field(
        None, description="LED/beeper lines of a PN532, QR or Wiegand reader on board outputs"
    )


class BoardConfig(_Section):
    """A relay/IO board (Modbus RTU/TCP, GPIO chip, or the fake)."""

    id: Id
    profile: str
    port: str | None = None
    host: str | None = None
    tcp_port: int | None = Field(None, ge=1, le=65535)
    unit: int = Field(1, ge=1, le=247, description="Modbus unit id (0 is broadcast)")
    options: dict[str, Any] = Field(default_factory=dict)


class Point(_Section):
    """One output or input on a board: ``{board = "relays", index = 0}``."""

    board: Id
    index: int = Field(ge=0, le=1023)
    active_low: bool = False


class ContactPoint(Point):
    """The door contact: which input level means *closed* is named, never assumed
    (a contact wired to GND with a pull-up reads active when closed)."""

    closed_when: Literal["active", "inactive"] = Field(
        "active",
        description="the input level (after active_low) that means the door is closed",
    )


class ReaderFeedback(_Section):
    """Board outputs wired to a reader's green LED, red LED and beeper (each optional):
    ``feedback = { green = { board = "io", index = 4 }, beep = { board = "io", index = 5 } }``."""

    green: Point | None = None
    red: Point | None = None
    beep: Point | None = None


ReaderConfig.model_rebuild()


class DoorConfig(_Section):
    """A door or turnstile (HARDWARE.md, Doors)."""

    id: Id
    zone: str
    direction: Literal["in", "out"]
    kind: Literal["door", "turnstile"] = "door"
    lock: Point | None = None
    contact: ContactPoint | None = None
    rex: Point | None = None
    passage: Point | None = None
    fire: Point | None = None
    unlock_seconds: Seconds = 5
    pulse_seconds: Annotated[float, Field(gt=0, le=10)] | None = Field(
        None, description="turnstile: length of the pulse on its open input (default 0.5 s)"
    )
    relock_on_close: bool | None = Field(
        None, description="end a grant when the door closes (default: on with a contact)"
    )
    held_open_seconds: Seconds = 30
    pass_timeout: Seconds = 10
    fail_mode: Literal["safe", "secure"] = "secure"
    fire_unknown_is_alarm: bool | None = Field(
        None,
        description="a fire input that cannot be read counts as alarm (default: on for "
        "fail_mode = safe doors)",
    )
    language: str | None = None

    @model_validator(mode="after")
    def _turnstile_fail_mode(self) -> DoorConfig:
        if self.kind == "turnstile" and self.fail_mode == "safe":
            raise ValueError(
                'fail_mode = "safe" is refused for a turnstile: it would hold the open input '
                "forever; a turnstile's emergency release is its own controller's fire input"
            )
        return self


class WebSection(_Section):
    """The installer's local web UI (README: The web UI)."""

    enabled: bool = True
    listen: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    tls: Literal["off", "self-signed", "files"] = Field(
        "off",
        description="HTTPS: off, self-signed (a certificate made once and kept in the state "
        "directory) or files (cert_file and key_file)",
    )
    cert_file: Path | None = None
    key_file: Path | None = None
    allow_insecure_listen: bool = Field(
        False,
        description="serve plain HTTP on a non-loopback address anyway (sessions and member "
        "data then cross the LAN in clear)",
    )
    hosts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9.:\[\]-]{1,253}$")]] = Field(
        default_factory=list,
        description="host names the UI answers to besides localhost, the listen address and "
        "the box's own name (a guard against DNS rebinding)",
    )

    @model_validator(mode="after")
    def _tls_files(self) -> WebSection:
        if self.tls == "files" and (self.cert_file is None or self.key_file is None):
            raise ValueError('tls = "files" needs cert_file and key_file')
        if self.tls != "files" and (self.cert_file or self.key_file):
            raise ValueError('cert_file and key_file are used only with tls = "files"')
        return self

    @property
    def loopback_only(self) -> bool:
        """Whether only this machine can reach the UI (then plain HTTP is fine)."""
        return is_loopback(self.listen)

    def insecure_listen_problem(self) -> str | None:
        """Why serving this section as configured would expose the UI in clear, if it would."""
        if self.tls != "off" or self.loopback_only or self.allow_insecure_listen:
            return None
        return (
            f"web.listen = {self.listen!r} serves the installer UI to the network without TLS: "
            'set web.tls = "self-signed" (or "files"), listen on 127.0.0.1 and use an SSH '
            "tunnel, or set web.allow_insecure_listen = true if you really mean it"
        )


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1 or a localhost name):
    the one test for the web UI's listen address and the broker's host."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Config(_Section):
    """The whole configuration file."""

    gateway: GatewaySection
    central: CentralSection = CentralSection()
    mqtt: MqttSection = MqttSection()
    readers: list[ReaderConfig] = Field(default_factory=list)
    boards: list[BoardConfig] = Field(default_factory=list)
    doors: list[DoorConfig] = Field(default_factory=list)
    web: WebSection = WebSection()
    log: LogSection = LogSection()
    metrics: MetricsSection = MetricsSection()
    journal: JournalSection = JournalSection()
    homeassistant: HomeAssistantSection = HomeAssistantSection()


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate TOML text (schema and cross-references); ConfigError with key and line.

    ``run`` and ``check-config`` validate more (files, state directory, devices):
    :func:`gateway.validation.validate_file`.
    """
    from gateway.validation import validate_text

    return validate_text(text, path, structure_only=True).valid_config()


def load_config(path: Path | str) -> Config:
    """Read the config file at ``path``: schema and cross-references only.

    For what ``run`` needs (files, state directory, devices): :mod:`gateway.validation`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read: {exc}"]) from None
    return parse_config(text, str(path))
