"""The entitlement set: site rules, member records and tickets (ENTITLEMENTS.md).

These are the wire records, validated strictly: an unknown enum value, a wrong type,
a naive timestamp or a schedule that is named but not defined makes the whole set
invalid (:class:`gateway.errors.InvalidSet`). Unknown *keys* are ignored, so that a
newer central system can add fields without breaking older gateways.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from gateway.errors import InvalidSet

WILDCARD = "*"


def _require_str(value: object) -> object:
    """Dates and times travel as strings; a number or bool is a wrong type, not a timestamp."""
    if not isinstance(value, str) and not isinstance(value, date):
        raise ValueError("must be an ISO 8601 string")
    return value


def _require_offset(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset, e.g. 2026-11-22T18:00:00+01:00")
    return value


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _parse_date(value: object) -> object:
    if isinstance(value, str):
        return _date_of(value)
    return _require_str(value)


@functools.lru_cache(maxsize=1024)
def _date_of(text: str) -> date:
    """The date ``YYYY-MM-DD``; remembered, as a set's members mostly share a few dates (a
    contract's start): a million records ask for the same ones again (a refusal, an
    exception, is not remembered)."""
    if not _DATE.fullmatch(text):
        raise ValueError("must be a date YYYY-MM-DD")
    return date.fromisoformat(text)


IsoDate = Annotated[date, BeforeValidator(_parse_date)]


def _parse_time(value: object) -> object:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("must be an ISO 8601 time with offset") from exc
    return _require_str(value)


IsoTime = Annotated[datetime, BeforeValidator(_parse_time), AfterValidator(_require_offset)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
IdList = list[StrictStr]


class _Wire(BaseModel):
    """Common settings of every wire model: frozen, strict types, extra keys ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)


# --- credentials -------------------------------------------------------------------------

_HEX_SEPARATORS = re.compile(r"[\s:\-]")
_HEX = re.compile(r"[0-9A-F]+")
_CLEAN_UID = re.compile(r"[0-9A-F]{8}|[0-9A-F]{14}|[0-9A-F]{20}")


def normalise_uid(uid: str) -> str | None:
    """An NFC UID as upper-case hex without separators, or None if it is not 4, 7 or 10 bytes."""
    if _CLEAN_UID.fullmatch(uid):  # already canonical, as the central system mostly sends it
        return uid
    clean = _HEX_SEPARATORS.sub("", uid).upper()
    if len(clean) not in (8, 14, 20) or not _HEX.fullmatch(clean):
        return None
    return clean


def credential_key(kind: str, value: str, fmt: str | None = None) -> str | None:
    """The canonical form of a credential value that the store hashes, or None if malformed.

    - ``nfc`` UIDs compare as hex, ignoring case and the separators ``:``, ``-``, space;
    - ``nfc`` card numbers with a ``format`` (OSDP/Wiegand) compare as decimal numbers;
    - ``code`` values compare exactly after trimming white space.
    """
    if kind == "nfc":
        if fmt:
            digits = value.strip()
            # ASCII only (str.isdigit() also takes "²" and other scripts' digits), and a
            # card number fits in 20 digits (int() of thousands of digits is refused)
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 20):
                return None
            return f"nfc:{fmt.strip().lower()}:{int(digits)}"
        uid = normalise_uid(value)
        return None if uid is None else f"nfc:{uid}"
    if kind == "code":
        code = value.strip()
        return f"code:{code}" if code else None
    return None


class NfcCredential(_Wire):
    """A card: UID as hex, or a reader-reported card number with its ``format``."""

    kind: Literal["nfc"]
    uid: StrictStr
    format: StrictStr | None = None

    @model_validator(mode="after")
    def _valid_uid(self) -> NfcCredential:
        # this runs once per card of a million-member set: the fields read from the instance
        # dict (BaseModel defines __getattr__, which leaves a model's attributes off
        # Python's fast path), and a canonical UID without a format, as the central system
        # mostly sends it, taken as its own key without credential_key's two calls
        fields = self.__dict__
        uid, fmt = fields["uid"], fields["format"]
        key = (
            "nfc:" + uid
            if not fmt and _CLEAN_UID.fullmatch(uid)
            else credential_key("nfc", uid, fmt)
        )
        if key is None:
            if self.format:
                raise ValueError(f"card number {self.uid!r} with format must be decimal digits")
            raise ValueError("uid must be hex of 4, 7 or 10 bytes")
        # what the cached property below would keep, kept now: it is asked for once per
        # credential of a million-member set, and the property's lock costs more than this
        fields["_canonical"] = key
        return self

    @functools.cached_property
    def _canonical(self) -> str | None:
        """Worked out once, when the record is validated, and kept for :attr:`key`."""
        return credential_key("nfc", self.uid, self.format)

    @property
    def key(self) -> str:
        """Canonical value for hashing."""
        key = self._canonical
        assert key is not None  # the validator refused the record otherwise
        return key


class CodeCredential(_Wire):
    """A static barcode or QR value printed on a membership card."""

    kind: Literal["code"]
    value: StrictStr

    @model_validator(mode="after")
    def _not_blank(self) -> CodeCredential:
        if not self.value.strip():
            raise ValueError("code value must not be blank")
        return self

    @property
    def key(self) -> str:
        """Canonical value for hashing."""
        return f"code:{self.value.strip()}"


def gateway_keys(gateways: Mapping[str, str]) -> dict[str, Ed25519PublicKey | None]:
    """``rules.gateways`` decoded: each gateway's public key, None for a malformed one."""
    keys: dict[str, Ed25519PublicKey | None] = {}
    for gw, b64 in gateways.items():
        raw = raw_ed25519_key(b64)
        keys[gw] = None if raw is None else Ed25519PublicKey.from_public_bytes(raw)
    return keys


def raw_ed25519_key(value: str) -> bytes | None:
    """The 32 raw bytes of a standard-base64 Ed25519 public key; None when malformed."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


class PhoneCredential(_Wire):
    """The member's bound phone: device id, Ed25519 public key, binding time.

    A malformed ``key`` leaves the record (and the set) valid: the phone's passes are then
    ``bad_pass`` (ENTITLEMENTS.md, "Passes, strictly"), so one bad key never holds up a
    whole site's sync.
    """

    kind: Literal["phone"]
    device: StrictStr
    key: StrictStr
    bound_at: IsoTime

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key; empty when the key is malformed (no pass
        can verify with it)."""
        return raw_ed25519_key(self.key) or b""


Credential = Annotated[
    NfcCredential | CodeCredential | PhoneCredential, Field(discriminator="kind")
]


# --- contracts and records ---------------------------------------------------------------


class DateRange(_Wire):
    """An inclusive date range (freezes)."""

    from_: IsoDate = Field(alias="from")
    to: IsoDate

    def covers(self, day: date) -> bool:
        """True when ``day`` falls inside the range, both ends included."""
        return self.from_ <= day <= self.to


class TimeRange(_Wire):
    """A half-open time range ``[from, to)`` (blocks, bookings)."""

    from_: IsoTime = Field(alias="from")
    to: IsoTime

    def covers(self, instant: datetime) -> bool:
        """True when ``instant`` is at or after ``from`` and before ``to``."""
        return self.from_ <= instant < self.to


class Block(TimeRange):
    """A blacklist period."""

    reason: StrictStr | None = None


class Booking(TimeRange):
    """A booked class or resource in a zone that needs a booking."""

    id: StrictStr
    zone: StrictStr


class MaxVisits(_Wire):
    """At most ``count`` granted entries per local day, ISO week or calendar month."""

    per: Literal["day", "week", "month"]
    count: NonNegInt


ContractType = Literal["recurring", "fixed", "clipcard"]


class Contract(_Wire):
    """A membership contract: recurring, fixed-term or clip card."""

    id: StrictStr
    type: ContractType
    start: IsoDate | None = None
    end: IsoDate | None = None
    credits: StrictInt | None = None
    sites: IdList = Field(default_factory=lambda: [WILDCARD])
    zones: IdList = Field(default_factory=lambda: [WILDCARD])
    schedule: StrictStr | None = None
    freezes: list[DateRange] = Field(default_factory=list)
    max_visits: MaxVisits | None = None

    @model_validator(mode="after")
    def _clipcard_has_credits(self) -> Contract:
        fields = self.__dict__  # off BaseModel's __getattr__: asked of every contract of a set
        if fields["type"] == "clipcard" and fields["credits"] is None:
            raise ValueError("a clipcard contract needs 'credits'")
        return self


class Member(_Wire):
    """One member's entitlement record."""

    member: StrictStr
    display: StrictStr | None = None
    role: Literal["member", "staff"] = "member"
    credentials: list[Credential] = Field(default_factory=list)
    contracts: list[Contract] = Field(default_factory=list)
    bookings: list[Booking] = Field(default_factory=list)
    blocks: list[Block] = Field(default_factory=list)
    unpaid: StrictBool = False
    medical_until: IsoDate | None = None
    message: StrictStr | None = None

    @property
    def id(self) -> str:
        """The record id (member id)."""
        return self.member

    @property
    def phone(self) -> PhoneCredential | None:
        """The bound phone, if any (at most one; the last one listed wins)."""
        phones = [c for c in self.credentials if isinstance(c, PhoneCredential)]
        return phones[-1] if phones else None

    def credential_keys(self) -> list[str]:
        """Canonical values of the card and code credentials, for the store's index."""
        # by ``kind`` (a Literal, one per class), not isinstance: a model class's isinstance
        # goes through ABCMeta in Python, and this is asked of every record of a set
        return [c.key for c in self.credentials if c.kind != "phone"]

    def holds(self, key: str) -> bool:
        """``key in self.credential_keys()``, asked of every record of a set by ``decide``:
        only the credentials of the key's kind (its prefix, ``nfc:`` or ``code:``) work out
        their keys."""
        # the class, not ``kind``: type() is cheaper than a model's attribute; a phone's
        # ``key`` field is its public key, never a credential key
        holder = _HOLDERS.get(key.partition(":")[0])
        for credential in self.credentials:
            if type(credential) is holder and credential.key == key:
                return True
        return False


_HOLDERS: dict[str, type[NfcCredential | CodeCredential]] = {
    "nfc": NfcCredential,
    "code": CodeCredential,
}


class Ticket(_Wire):
    """A single-use (or few-use) ticket: event ticket, online guest pass."""

    ticket: StrictStr
    code: StrictStr
    valid_from: IsoTime
    valid_to: IsoTime
    zones: IdList = Field(default_factory=lambda: [WILDCARD])
    uses: Annotated[StrictInt, Field(ge=1)] = 1

    @property
    def id(self) -> str:
        """The record id (ticket id)."""
        return self.ticket

    def credential_keys(self) -> list[str]:
        """A ticket is presented by its code."""
        key = credential_key("code", self.code)
        return [key] if key else []

    def holds(self, key: str) -> bool:
        """``key in self.credential_keys()``."""
        return key in self.credential_keys()

    @model_validator(mode="after")
    def _code_not_blank(self) -> Ticket:
        if not self.code.strip():
            raise ValueError("ticket code must not be blank")
        return self


Record = Member | Ticket


# --- site rules --------------------------------------------------------------------------

_HHMM = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d|24:00")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@functools.lru_cache(maxsize=256)
def parse_days(spec: str) -> frozenset[int]:
    """Weekday numbers (Monday 0) of a ``days`` spec: ``mon``, ``mon-fri``, ``fri-mon``, ``a,b``."""
    result: set[int] = set()
    for part in spec.split(","):
        part = part.strip().lower()
        if "-" in part:
            first, _, last = part.partition("-")
            if first not in DAYS or last not in DAYS:
                raise ValueError(f"unknown day range {part!r} (use mon..sun)")
            i, j = DAYS.index(first), DAYS.index(last)
            while True:
                result.add(i)
                if i == j:
                    break
                i = (i + 1) % 7
        elif part in DAYS:
            result.add(DAYS.index(part))
        else:
            raise ValueError(f"unknown day {part!r} (use mon..sun)")
    return frozenset(result)


def _check_days(value: str) -> str:
    parse_days(value)
    return value


def _check_hhmm(value: str) -> str:
    if not _HHMM.fullmatch(value):
        raise ValueError("must be local wall-clock HH:MM (00:00 to 24:00)")
    return value


def minutes_of(hhmm: str) -> int:
    """Minutes since midnight of ``HH:MM`` (``24:00`` is 1440)."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class Window(_Wire):
    """One schedule window: days and local wall-clock ``[from, to)``; ``to < from`` is overnight."""

    days: Annotated[StrictStr, AfterValidator(_check_days)]
    from_: Annotated[StrictStr, AfterValidator(_check_hhmm)] = Field(alias="from")
    to: Annotated[StrictStr, AfterValidator(_check_hhmm)]


class ZoneRule(_Wire):
    """Per-zone rules; a zone missing from the site's ``zones`` gets these defaults."""

    capacity: NonNegInt | None = None
    anti_passback: Literal["none", "soft", "hard"] = "none"
    credits: NonNegInt = 1
    booking: StrictBool = False
    booking_early_minutes: NonNegInt = 0


Policy = Literal["deny", "warn", "allow"]
_GATEWAY_ID = re.compile(r"[a-z0-9-]{1,64}")


def _gateway_id(value: str) -> str:
    if not _GATEWAY_ID.fullmatch(value):
        raise ValueError("gateway ids must match [a-z0-9-]{1,64}")
    return value


class SiteRules(_Wire):
    """The site rules that come with the entitlement set."""

    site: StrictStr
    timezone: StrictStr
    schedules: dict[StrictStr, list[Window]] = Field(default_factory=dict)
    opening_schedule: StrictStr | None = None
    staff_schedule: StrictStr | None = None
    zones: dict[StrictStr, ZoneRule] = Field(default_factory=dict)
    unpaid: Policy = "allow"
    medical: Policy = "allow"
    reentry_free_minutes: NonNegInt = 0
    anti_passback_minutes: NonNegInt = 15
    max_offline_hours: NonNegInt | None = None
    pass_window_s: NonNegInt = 30
    messages: dict[StrictStr, dict[StrictStr, StrictStr]] = Field(default_factory=dict)
    gateways: dict[Annotated[StrictStr, AfterValidator(_gateway_id)], StrictStr] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _known_names(self) -> SiteRules:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r} (use an IANA name)") from exc
        for key in ("opening_schedule", "staff_schedule"):
            name = getattr(self, key)
            if name is not None and name not in self.schedules:
                raise ValueError(f"{key} names schedule {name!r}, which is not defined")
        return self

    @property
    def tz(self) -> ZoneInfo:
        """The site's time zone."""
        return ZoneInfo(self.timezone)

    def gateway_keys(self) -> dict[str, Ed25519PublicKey | None]:
        """The registered gateways' public keys (``gateways``); None for a malformed one,
        whose messages are then refused (the rest of the set stays valid)."""
        return gateway_keys(self.gateways)

    def zone(self, zone: str) -> ZoneRule:
        """The rules of ``zone``, or the defaults for a zone the site does not list."""
        return self.zones.get(zone) or _DEFAULT_ZONE


_DEFAULT_ZONE = ZoneRule()


# --- parsing -----------------------------------------------------------------------------

_MEMBER = TypeAdapter(Member)
_TICKET = TypeAdapter(Ticket)
_RULES = TypeAdapter(SiteRules)


def _problems(exc: ValidationError, where: str, limit: int = 10) -> list[str]:
    out = []
    for err in exc.errors()[:limit]:
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{where}{'.' + path if path else ''}: {msg}")
    return out


def parse_rules(raw: object) -> SiteRules:
    """Validate site rules; raise :class:`InvalidSet` naming the problems."""
    try:
        return _RULES.validate_python(raw)
    except ValidationError as exc:
        raise InvalidSet(_problems(exc, "rules")) from None


def parse_record(raw: object, where: str = "record", at: int | None = None) -> Record:
    """Validate one member or ticket record (told apart by its ``member``/``ticket`` key).

    Problems name it ``where``, or ``where[at]`` given its place in a list.
    """
    if type(raw) is not dict and not isinstance(raw, Mapping):  # dict: skip ABCMeta's check
        raise InvalidSet([f"{_place(where, at)}: must be an object"])
    try:
        # the schema validators themselves: TypeAdapter.validate_python's keyword arguments
        # cost more than a record's checks of a date (a set has a million records)
        if "member" in raw:
            member: Member = _MEMBER.validator.validate_python(raw)
            return member
        if "ticket" in raw:
            ticket: Ticket = _TICKET.validator.validate_python(raw)
            return ticket
    except ValidationError as exc:
        label = raw.get("member") or raw.get("ticket")
        raise InvalidSet(_problems(exc, f"{_place(where, at)}({label})")) from None
    raise InvalidSet([f"{_place(where, at)}: has neither 'member' nor 'ticket'"])


def _place(where: str, at: int | None) -> str:
    """A record's name in problems: worked out only for a problem, not for each record of a
    million-record set."""
    return where if at is None else f"{where}[{at}]"


def schedule_uses(records: Iterable[Record]) -> Iterator[tuple[str, str]]:
    """``(schedule, where)`` for every contract of ``records`` that names a schedule."""
    for record in records:
        if isinstance(record, Member):
            for contract in record.contracts:
                if contract.schedule is not None:
                    yield contract.schedule, f"record({record.member}).contracts({contract.id})"


def undefined_schedules(uses: Iterable[tuple[str, str]], rules: SiteRules) -> list[str]:
    """The problems of ``uses`` (from :func:`schedule_uses`) that the rules do not define."""
    return [
        f"{where}.schedule: names schedule {name!r}, which is not defined"
        for name, where in uses
        if name not in rules.schedules
    ]


def check_schedules(records: Iterable[Record], rules: SiteRules) -> list[str]:
    """Problems with contracts that name a schedule the site rules do not define."""
    return undefined_schedules(schedule_uses(records), rules)


def collect_records(raws: Iterable[object], where: str) -> tuple[list[Record], list[str]]:
    """The records that validate, and the problems of the others (it stops at 10)."""
    records: list[Record] = []
    problems: list[str] = []
    for i, raw in enumerate(raws):
        try:
            records.append(parse_record(raw, where, i))
        except InvalidSet as exc:
            problems.extend(exc.problems)
            if len(problems) >= 10:
                break
    return records, problems


def parse_records(raws: Iterable[object], rules: SiteRules) -> list[Record]:
    """Validate a list of records against the rules; collects up to 10 problems, then raises."""
    records, problems = collect_records(raws, "records")
    problems.extend(check_schedules(records, rules))
    if problems:
        raise InvalidSet(problems)
    return records


def parse_set(raw: Any) -> tuple[int, SiteRules, list[Record]]:
    """Validate a whole set ``{"version": N, "rules": {...}, "records": [...]}``."""
    version, rules, records_raw = parse_set_head(raw)
    return version, rules, parse_records(records_raw, rules)


def parse_set_head(raw: Any) -> tuple[int, SiteRules, list[Any]]:
    """A whole set's version and rules, validated, and its records list, not yet (the
    records are validated by :func:`parse_records`, or one by one by ``decide --set``)."""
    if not isinstance(raw, Mapping):
        raise InvalidSet(["set: must be an object with version, rules, records"])
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise InvalidSet(["version: must be a non-negative integer"])
    if "rules" not in raw:
        raise InvalidSet(["rules: missing"])
    rules = parse_rules(raw["rules"])
    records_raw = raw.get("records", [])
    if not isinstance(records_raw, list):
        raise InvalidSet(["records: must be a list"])
    return version, rules, records_raw
