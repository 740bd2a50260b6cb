"""Backup and restore: one encrypted archive that makes a new box the same gateway.

What goes in: the config file, every secret of the state directory (the credential HMAC
key, OSDP keys, the gateway's identity key, the installer password hash, the web UI's TLS
key), the journal (check-ins and events the central system has not acknowledged, and the
running ``seq``), the other small local databases (pass replay cache, recent passages,
command ids, the installer's event history), and the files the config names outside the
state directory (MQTT CA, client certificate and key, password file, web TLS files). The
entitlement set (``store*.sqlite``) is left out: it comes back by sync.

The archive is a tar inside AES-256-GCM, keyed from a passphrase with scrypt::

    MAGIC (8) | salt (16) | nonce (12) | AES-GCM(tar), the first 36 bytes as associated data

A wrong passphrase or a damaged file is refused as a whole, before anything is written.
A restore is staged beside the state and applied at the gateway's start (see "restore:
open and check" below); what it replaces is moved aside, never deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway import __version__
from gateway.config import Config, parse_config
from gateway.errors import AccessGwError
from gateway.state_dir import StateDir, fsync_directory, write_secret_atomically

log = logging.getLogger(__name__)

MAGIC = b"AGWBAK1\n"
FORMAT = 1
SALT_BYTES, NONCE_BYTES = 16, 12
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # ~32 MiB, well under a second on a Pi 4
MAX_ARCHIVE = 512 * 1024 * 1024
MIN_PASSPHRASE = 10
# what the sync brings back, or what is remade on its own: never in a backup
LEFT_OUT_PREFIXES = ("store",)
LEFT_OUT_SECRETS = frozenset({"setup.code"})


class BackupError(AccessGwError):
    """A backup could not be made or restored; the message says why and what to do."""


# --- encryption --------------------------------------------------------------------------


def _key(passphrase: str, salt: bytes) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    kdf = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(passphrase.encode("utf-8"))


def seal(plain: bytes, passphrase: str) -> bytes:
    """Encrypt ``plain`` with a key derived from ``passphrase``."""
    salt, nonce = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(NONCE_BYTES)
    header = MAGIC + salt + nonce
    return header + AESGCM(_key(passphrase, salt)).encrypt(nonce, plain, header)


def unseal(sealed: bytes, passphrase: str) -> bytes:
    """Decrypt an archive; BackupError if it is no backup, damaged, or the passphrase is wrong."""
    head = len(MAGIC) + SALT_BYTES + NONCE_BYTES
    if len(sealed) > MAX_ARCHIVE:
        raise BackupError(f"the file is larger than a backup can be ({MAX_ARCHIVE} bytes)")
    if len(sealed) <= head or not sealed.startswith(MAGIC):
        raise BackupError("this is not an accessgw backup (its first bytes are wrong)")
    salt = sealed[len(MAGIC) : len(MAGIC) + SALT_BYTES]
    nonce = sealed[len(MAGIC) + SALT_BYTES : head]
    try:
        return AESGCM(_key(passphrase, salt)).decrypt(nonce, sealed[head:], sealed[:head])
    except InvalidTag:
        raise BackupError(
            "the backup cannot be opened: the passphrase is wrong, or the file is damaged"
        ) from None


# --- what goes in ------------------------------------------------------------------------


def _database_copy(path: Path) -> bytes:
    """A consistent copy of a SQLite database, also while the gateway writes it (WAL)."""
    with tempfile.TemporaryDirectory(prefix="accessgw-backup-") as tmp:
        target = Path(tmp) / path.name
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            dest = sqlite3.connect(target)
            try:
                source.backup(dest)
            finally:
                dest.close()
        finally:
            source.close()
        return target.read_bytes()


def _outside_files(config: Config) -> list[tuple[str, Path]]:
    """Files the config names outside the state directory: (config key, path)."""
    mqtt, web = config.mqtt, config.web
    named: list[tuple[str, Path | None]] = [("mqtt.password_file", mqtt.password_file)]
    if mqtt.tls is not None:
        named += [
            ("mqtt.tls.ca_file", mqtt.tls.ca_file),
            ("mqtt.tls.cert_file", mqtt.tls.cert_file),
            ("mqtt.tls.key_file", mqtt.tls.key_file),
        ]
    named += [("web.cert_file", web.cert_file), ("web.key_file", web.key_file)]
    state = config.gateway.state_dir.resolve()
    return [
        (key, path)
        for key, path in named
        if path is not None and state not in path.resolve().parents
    ]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(datetime.now(UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


def create_backup(config_path: Path | str, passphrase: str) -> bytes:
    """The encrypted backup of the gateway that ``config_path`` configures.

    Blocking (disk, scrypt): call it from a thread when a loop is running.
    """
    config_path = Path(config_path).resolve()
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BackupError(f"config file {config_path} cannot be read: {exc.strerror}") from exc
    config = parse_config(text, str(config_path))
    state = config.gateway.state_dir
    if not state.is_dir():
        raise BackupError(f"state directory {state} does not exist: nothing to back up")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "software": __version__,
        "gateway": config.gateway.id,
        "site": config.gateway.site,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_path": str(config_path),
        "state_dir": str(state),
        "databases": [],
        "secrets": [],
        "outside": [],
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "config.toml", text.encode("utf-8"))
        for db in sorted(state.glob("*.sqlite")):
            if db.name.startswith(LEFT_OUT_PREFIXES):
                continue
            _add(tar, f"state/{db.name}", _database_copy(db))
            manifest["databases"].append(db.name)
        secrets_dir = state / "secrets"
        for path in sorted(p for p in secrets_dir.rglob("*") if p.is_file()):
            relative = path.relative_to(secrets_dir).as_posix()
            if path.name in LEFT_OUT_SECRETS or path.name.startswith("."):
                continue  # one-time codes and half-written temporaries
            _add(tar, f"secrets/{relative}", path.read_bytes())
            manifest["secrets"].append(relative)
        for index, (key, path) in enumerate(_outside_files(config)):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise BackupError(f"{key} {path} cannot be read: {exc.strerror}") from exc
            _add(tar, f"outside/{index}", data)
            manifest["outside"].append({"key": key, "path": str(path)})
        _add(tar, "manifest.json", json.dumps(manifest, indent=2).encode("utf-8"))
    return seal(buffer.getvalue(), passphrase)


# --- restore: open and check -------------------------------------------------------------
#
# A restore is staged, then applied. Staging opens the archive, checks every member and the
# config (the validation ``check-config`` runs, against this box) and writes the files beside
# the state, in ``<state>/.restore-pending-<token>/``; nothing in use changes. Confirming
# renames that to ``<state>/restore-staged/``, which the gateway applies at its next start,
# before it opens any state: everything the state directory held is moved aside to
# ``<state>/replaced-<UTC stamp>/`` (never deleted), then the staged files are put in place.
# A failure undoes what was done and leaves the staging with the reason (``failed.json``):
# the gateway starts on its old state, never on a half-restored one.

STAGED = "restore-staged"
PENDING = ".restore-pending-"
UPLOADS = "restore-uploads"  # the web UI's uploaded archives, until checked
REPLACED = "replaced-"
PLAN, FAILED, APPLYING, OUTCOME = "plan.json", "failed.json", "applying.json", "restore.json"
KEPT_IN_PLACE = frozenset({STAGED, UPLOADS, "backups"})  # never moved aside by a restore
OutsideKey = Literal[
    "mqtt.password_file",
    "mqtt.tls.ca_file",
    "mqtt.tls.cert_file",
    "mqtt.tls.key_file",
    "web.cert_file",
    "web.key_file",
]
OUTSIDE_KEYS: tuple[str, ...] = get_args(OutsideKey)  # the files a config names
DATABASE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\.sqlite$")
SECRET_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
TOKEN = re.compile(r"^[0-9a-f]{16}$")
MAX_SECRET = 1024 * 1024  # a key, a certificate, a password hash: far less
SQLITE_HEADER = b"SQLite format 3\x00"


class _Outside(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: OutsideKey
    path: str = Field(min_length=2, max_length=4096, pattern=r"^/")


class Manifest(BaseModel):
    """What a backup says it holds (``manifest.json``), checked before it is believed."""

    model_config = ConfigDict(extra="ignore")
    format: Literal[1]
    software: str = Field(max_length=64)
    gateway: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    site: str = Field(min_length=1, max_length=256)
    created_at: datetime
    config_path: str = Field(min_length=2, max_length=4096, pattern=r"^/")
    state_dir: str = Field(min_length=2, max_length=4096, pattern=r"^/")
    databases: list[str] = Field(max_length=64)
    secrets: list[str] = Field(max_length=4096)
    outside: list[_Outside] = Field(max_length=len(OUTSIDE_KEYS))


def _members(plain: bytes) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
            for info in tar.getmembers():
                name = PurePosixPath(info.name)
                if not info.isfile() or name.is_absolute() or ".." in name.parts:
                    raise BackupError(f"the backup holds an unsafe entry {info.name!r}")
                if info.name in members:
                    raise BackupError(f"the backup holds {info.name!r} twice")
                handle = tar.extractfile(info)
                assert handle is not None  # a regular file
                members[info.name] = handle.read()
    except (tarfile.TarError, EOFError) as exc:
        raise BackupError(f"the backup is damaged: {exc}") from exc
    return members


def _manifest(raw: bytes | None) -> Manifest:
    if raw is None:
        raise BackupError("the backup has no manifest: it was not made by accessgw backup")
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(manifest)"
        raise BackupError(f"the backup's manifest is not valid: {where}: {first['msg']}") from None


def _check_members(manifest: Manifest, members: dict[str, bytes]) -> None:
    """Every member named by the manifest, present, of a safe name and plausible content."""
    expected = {"config.toml"}
    for name in manifest.databases:
        if not DATABASE_NAME.match(name) or name.startswith(LEFT_OUT_PREFIXES):
            raise BackupError(f"the backup names a database {name!r} that a gateway never has")
        expected.add(f"state/{name}")
    for relative in manifest.secrets:
        parts = PurePosixPath(relative).parts
        if not parts or len(parts) > 3 or not all(SECRET_PART.match(p) for p in parts):
            raise BackupError(f"the backup names a secret {relative!r} of an unsafe name")
        expected.add(f"secrets/{relative}")
    expected.update(f"outside/{index}" for index in range(len(manifest.outside)))
    if missing := sorted(expected - members.keys()):
        raise BackupError(f"the backup is incomplete: it lacks {', '.join(missing)}")
    if unknown := sorted(members.keys() - expected):
        raise BackupError(f"the backup holds files its manifest does not list: {unknown[0]!r}")
    for name, data in members.items():
        if name.startswith("state/"):
            if not data.startswith(SQLITE_HEADER):
                raise BackupError(f"the backup's {name[6:]} is not an SQLite database")
        elif name != "config.toml" and len(data) > MAX_SECRET:
            raise BackupError(f"the backup's {name} is larger than such a file can be")
    try:
        members["config.toml"].decode("utf-8")
    except UnicodeDecodeError:
        raise BackupError("the backup's config file is not UTF-8 text") from None
    hmac = members.get("secrets/hmac.key")
    if hmac is not None and len(hmac) != 32:
        raise BackupError(f"the backup's credential HMAC key has {len(hmac)} bytes, not 32")


def _open(sealed: bytes, passphrase: str) -> tuple[Manifest, dict[str, bytes]]:
    members = _members(unseal(sealed, passphrase))
    manifest = _manifest(members.pop("manifest.json", None))
    _check_members(manifest, members)
    return manifest, members


def read_backup(sealed: bytes, passphrase: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the members of a backup, every member checked."""
    manifest, members = _open(sealed, passphrase)
    return manifest.model_dump(mode="json"), members


@dataclass(frozen=True)
class JournalFacts:
    """What a journal holds: records not yet acknowledged, and the last ``seq`` given."""

    backlog: int = 0
    last_seq: int = 0


def journal_facts(path: Path) -> JournalFacts:
    """Read a journal (read-only, also while a gateway writes it); BackupError if damaged."""
    if not path.exists():
        return JournalFacts()
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise BackupError(f"journal {path.name} is damaged: {check}")
            (count,) = conn.execute("SELECT COUNT(*) FROM records").fetchone()
            row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"journal {path.name} cannot be read: {exc}") from exc
    return JournalFacts(int(count), int(row[0]) if row else 0)


def _database_checked(name: str, data: bytes, beside: Path) -> JournalFacts:
    """A database of the backup checked whole (``quick_check``); the journal's facts.

    The copy is made in ``beside`` (the state directory, if it exists): a journal can be
    a hundred megabytes, too much for a /tmp in memory."""
    where = beside if beside.is_dir() else None
    with tempfile.TemporaryDirectory(prefix=".accessgw-restore-", dir=where) as tmp:
        copy = Path(tmp) / name
        copy.write_bytes(data)
        if name == "journal.sqlite":
            return journal_facts(copy)
        try:
            conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
            try:
                (check,) = conn.execute("PRAGMA quick_check").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"the backup's {name} is damaged: {exc}") from exc
        if check != "ok":
            raise BackupError(f"the backup's {name} is damaged: {check}")
        return JournalFacts()


# --- restore: the config, made to fit this box ---------------------------------------------


def _with_state_dir(text: str, old: Path, new: Path) -> str:
    """The config text with ``gateway.state_dir`` set to ``new`` (comments and layout kept);
    files the config names inside the old state directory are named inside the new one."""
    import tomlkit

    document = tomlkit.parse(text)
    gateway = document.get("gateway")
    if not isinstance(gateway, dict):
        raise BackupError("the backup's config has no [gateway] table")
    gateway["state_dir"] = str(new)
    for key in OUTSIDE_KEYS:
        *sections, name = key.split(".")
        table: Any = document
        for section in sections:
            table = table.get(section) if isinstance(table, dict) else None
        value = table.get(name) if isinstance(table, dict) else None
        if isinstance(value, str) and Path(value).is_relative_to(old):
            table[name] = str(new / Path(value).relative_to(old))
    return tomlkit.dumps(document)


def _config_problems(text: str, config_path: Path, placed: set[Path]) -> tuple[Config, list[str]]:
    """The config checked as ``check-config`` checks it, on this box; its warnings.

    A file the restore itself puts in place is not held against it."""
    from gateway.validation import validate_text

    report = validate_text(text, str(config_path))
    brought = {f"file {path} does not exist" for path in placed}
    problems = [p for p in report.problems if p.message not in brought]
    if problems or report.config is None:
        raise BackupError(
            "the backup's config would not run on this box: "
            + "; ".join(str(p) for p in problems or report.problems)
        )
    return report.config, [str(w) for w in report.warnings]


def _writable(folder: Path) -> str | None:
    """Why a file cannot be written into ``folder`` (made if missing), or None."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".accessgw-restore-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return f"{folder} cannot be written: {exc.strerror}"
    return None


# --- restore: what it will do, shown before it is done --------------------------------------


@dataclass
class BoxFacts:
    """The gateway this box is now, and what it would have moved aside."""

    gateway: str | None = None
    site: str | None = None
    backlog: int = 0
    last_seq: int = 0
    osdp_keys: list[str] = field(default_factory=list)
    entitlements: bool = False


def box_facts(config_path: Path, state_dir: Path) -> BoxFacts:
    """What this box holds now (read-only: the gateway may be running)."""
    facts = BoxFacts()
    with contextlib.suppress(OSError, ValueError):
        gateway = tomllib.loads(config_path.read_text(encoding="utf-8")).get("gateway", {})
        facts.gateway, facts.site = gateway.get("id"), gateway.get("site")
    try:
        journal = journal_facts(state_dir / "journal.sqlite")
    except BackupError:
        journal = JournalFacts()
    facts.backlog, facts.last_seq = journal.backlog, journal.last_seq
    facts.osdp_keys = sorted(p.stem for p in (state_dir / "secrets" / "osdp").glob("*.scbk"))
    facts.entitlements = any(state_dir.glob("store*.sqlite"))
    return facts


@dataclass
class RestorePlan:
    """What a staged restore will put in place, and what this box has now."""

    token: str
    gateway: str
    site: str
    created_at: str
    software: str
    config_path: str
    state_dir: str
    boards: list[str]
    doors: list[str]
    readers: list[str]
    backlog: int
    last_seq: int
    secrets: list[str]
    osdp_keys: list[str]
    outside: list[str]
    web: str
    warnings: list[str]
    current: BoxFacts

    def as_json(self) -> dict[str, Any]:
        """A plain object (plan.json, the web UI)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RestorePlan:
        """Read back what :meth:`as_json` wrote."""
        return cls(**{**data, "current": BoxFacts(**data["current"])})


def _summary(
    token: str, manifest: Manifest, config: Config, journal: JournalFacts, warnings: list[str],
    current: BoxFacts, config_path: Path,
) -> RestorePlan:  # fmt: skip
    web = config.web
    scheme = "http" if web.tls == "off" else "https"
    return RestorePlan(
        token=token,
        gateway=manifest.gateway,
        site=manifest.site,
        created_at=manifest.created_at.isoformat(timespec="seconds"),
        software=manifest.software,
        config_path=str(config_path),
        state_dir=str(config.gateway.state_dir),
        boards=[f"{b.id} ({b.profile})" for b in config.boards],
        doors=[f"{d.id} ({d.zone}, {d.direction})" for d in config.doors],
        readers=[f"{r.id} ({r.profile}) at {r.door}" for r in config.readers],
        backlog=journal.backlog,
        last_seq=journal.last_seq,
        secrets=list(manifest.secrets),
        osdp_keys=sorted(PurePosixPath(s).stem for s in manifest.secrets if s.startswith("osdp/")),
        outside=[entry.path for entry in manifest.outside],
        web=f"{scheme}://{web.listen}:{web.port}/" if web.enabled else "off",
        warnings=warnings,
        current=current,
    )


# --- restore: staging --------------------------------------------------------------------


def stage_restore(
    sealed: bytes,
    passphrase: str,
    *,
    config_path: Path | str | None,
    state_dir: Path | str | None,
) -> RestorePlan:
    """Open and check a backup for this box, and write it beside the state (pending).

    ``config_path`` and ``state_dir`` None keep those of the backup. Nothing in use
    changes: the result is ``<state>/.restore-pending-<token>/``, which
    :func:`commit_restore` makes the staged restore. BackupError, in words, for a wrong
    passphrase, a damaged or foreign file, or a config that would not run here. Blocking
    (scrypt, disk): call it from a thread.
    """
    manifest, members = _open(sealed, passphrase)
    config_path = Path(config_path or manifest.config_path).absolute()
    old_state = Path(manifest.state_dir)
    state = Path(state_dir).absolute() if state_dir is not None else old_state
    journal = JournalFacts()
    for name in manifest.databases:
        facts = _database_checked(name, members[f"state/{name}"], state)
        if name == "journal.sqlite":
            journal = facts
    # (what, where it goes, whether it lives in the state directory, its bytes)
    placements: list[tuple[Path, bool, bytes]] = []
    placements += [(state / n, True, members[f"state/{n}"]) for n in manifest.databases]
    placements += [(state / "secrets" / s, True, members[f"secrets/{s}"]) for s in manifest.secrets]
    placements += [
        (Path(e.path), False, members[f"outside/{i}"]) for i, e in enumerate(manifest.outside)
    ]
    text = members["config.toml"].decode("utf-8")
    if old_state != state:
        try:
            text = _with_state_dir(text, old_state, state)
        except ValueError as exc:  # tomlkit's ParseError is one
            raise BackupError(f"the backup's config is not valid TOML: {exc}") from exc
    placements.append((config_path, False, text.encode("utf-8")))
    config, warnings = _config_problems(text, config_path, {p for p, _, _ in placements})
    for folder in sorted({target.parent for target, in_state, _ in placements if not in_state}):
        if (why := _writable(folder)) is not None:
            raise BackupError(f"the restore cannot write its files: {why}")
    current = box_facts(config_path, state)
    token = secrets.token_hex(8)
    plan = _summary(token, manifest, config, journal, warnings, current, config_path)
    _write_pending(state, token, plan, placements)
    return plan


def _write_pending(
    state: Path, token: str, plan: RestorePlan, placements: list[tuple[Path, bool, bytes]]
) -> None:
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    discard_pending(state)  # one restore at a time: an older unconfirmed one goes
    pending = state / f"{PENDING}{token}"
    (pending / "files").mkdir(parents=True, mode=0o700)
    described = []
    for number, (target, in_state, data) in enumerate(placements):
        write_secret_atomically(pending / "files" / str(number), data)
        described.append({
            "file": f"files/{number}", "target": str(target), "in_state": in_state,
            "sha256": hashlib.sha256(data).hexdigest(),
        })  # fmt: skip
    fsync_directory(pending / "files")
    record = {"plan": plan.as_json(), "placements": described}
    write_secret_atomically(pending / PLAN, json.dumps(record, indent=1).encode("utf-8"))
    fsync_directory(state)


def _pending(state: Path, token: str) -> Path:
    if not TOKEN.match(token):
        raise BackupError("no such restore: check the backup again")
    pending = state / f"{PENDING}{token}"
    if not (pending / PLAN).is_file():
        raise BackupError("this restore is no longer waiting: upload and check the backup again")
    return pending


def _plan_of(folder: Path) -> tuple[RestorePlan, list[dict[str, Any]]]:
    record = json.loads((folder / PLAN).read_text(encoding="utf-8"))
    return RestorePlan.from_json(record["plan"]), list(record["placements"])


def pending_plan(state: Path, token: str) -> RestorePlan:
    """The plan of a checked restore waiting for confirmation."""
    return _plan_of(_pending(state, token))[0]


def discard_pending(state: Path, token: str | None = None) -> None:
    """Forget checked restores not confirmed (one, or all)."""
    for folder in state.glob(f"{PENDING}*"):
        if token is None or folder.name == f"{PENDING}{token}":
            shutil.rmtree(folder, ignore_errors=True)


def commit_restore(state: Path, token: str) -> RestorePlan:
    """The confirmed restore becomes the staged one (a rename): applied at the next start."""
    pending = _pending(state, token)
    plan = _plan_of(pending)[0]
    staged = state / STAGED
    if staged.exists():  # an earlier staged (or failed) restore: the newer decision wins
        shutil.rmtree(staged)
    os.replace(pending, staged)
    fsync_directory(state)
    return plan


# --- restore: applied at the start, before any state is opened -------------------------------


@dataclass
class RestoreOutcome:
    """What became of a staged restore at a start."""

    applied: bool
    message: str
    plan: RestorePlan | None = None
    replaced: Path | None = None

    def event(self) -> dict[str, Any]:
        """The ``installer_action`` event's detail: no secret, no path to one."""
        detail: dict[str, Any] = {"action": "restore_applied" if self.applied else "restore_failed"}
        if self.plan is not None:
            detail |= {"backup_of": self.plan.gateway, "backup_created_at": self.plan.created_at,
                       "journal_backlog": self.plan.backlog}  # fmt: skip
        if self.replaced is not None:
            detail["replaced"] = self.replaced.name
        if not self.applied:
            detail["reason"] = self.message
        return detail


def state_dir_named(config_path: Path | str) -> Path | None:
    """The state directory a config file names (None if it cannot be read: the validation
    that follows says what is wrong with the file)."""
    try:
        gateway = tomllib.loads(Path(config_path).read_text(encoding="utf-8")).get("gateway", {})
        return Path(gateway["state_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def apply_staged_restore(state: Path) -> RestoreOutcome | None:
    """Apply the restore staged in ``state``: all of it, or none of it (None: none staged).

    A failed one is not tried again (its ``failed.json`` says why) until it is staged anew.
    BackupError only if a failure could not be undone: then the gateway must not start.
    """
    staged = state / STAGED
    if not (staged / PLAN).is_file():
        return None
    if (staged / FAILED).is_file():
        reason = json.loads((staged / FAILED).read_text(encoding="utf-8")).get("reason", "?")
        return RestoreOutcome(False, f"a staged restore failed earlier and waits: {reason}")
    try:
        plan, placements = _plan_of(staged)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _failed(staged, None, f"its plan cannot be read ({exc})")
    if (staged / APPLYING).is_file():  # a start that stopped half-way: carry it through
        aside = state / json.loads((staged / APPLYING).read_text(encoding="utf-8"))["aside"]
    else:
        try:
            _verify(staged, plan, placements)
            aside = _aside(state)
            write_secret_atomically(staged / APPLYING, json.dumps({"aside": aside.name}).encode())
        except (BackupError, OSError, KeyError, TypeError, ValueError) as exc:
            return _failed(staged, plan, str(exc))
    try:
        _apply(state, staged, placements, aside)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        _undo(state, staged, placements, aside)
        (staged / APPLYING).unlink()
        return _failed(staged, plan, f"it could not be put in place ({exc}); nothing changed")
    outcome = {"plan": plan.as_json(), "applied_at": datetime.now(UTC).isoformat()}
    write_secret_atomically(aside / OUTCOME, json.dumps(outcome, indent=1).encode())
    # what is left of the staging: its plan, and the copies of the files written outside
    # the state directory (the config, certificates), kept with the rest
    os.replace(staged, aside / "restore-staging")
    fsync_directory(state)
    StateDir(state).ensure()
    return RestoreOutcome(
        True,
        f"restored gateway {plan.gateway} of site {plan.site} from its backup of "
        f"{plan.created_at}; what this box held is kept in {aside}",
        plan,
        aside,
    )


def restore_status(state: Path) -> dict[str, Any]:
    """The last restore applied in ``state`` and the one staged or failed, for the web UI."""
    status: dict[str, Any] = {"staged": None, "failed": None, "last": None}
    staged = state / STAGED
    if (staged / FAILED).is_file():
        status["failed"] = json.loads((staged / FAILED).read_text(encoding="utf-8"))
    elif (staged / PLAN).is_file():
        status["staged"] = _plan_of(staged)[0].gateway
    done = sorted(state.glob(f"{REPLACED}*/{OUTCOME}"))
    if done:
        outcome = json.loads(done[-1].read_text(encoding="utf-8"))
        status["last"] = {
            "gateway": outcome["plan"]["gateway"],
            "created_at": outcome["plan"]["created_at"],
            "applied_at": outcome["applied_at"],
            "replaced": str(done[-1].parent),
        }
    return status


def _aside(state: Path) -> Path:
    """A new ``replaced-<UTC stamp>`` folder (a suffix if one of that second exists)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", *(f"-{n}" for n in range(2, 100))):
        aside = state / f"{REPLACED}{stamp}{suffix}"
        try:
            aside.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return aside
    raise BackupError(f"no free name for {REPLACED}{stamp} in {state}")


def _failed(staged: Path, plan: RestorePlan | None, reason: str) -> RestoreOutcome:
    """Leave the staging in place with the reason; the gateway starts on its old state."""
    record = {"reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        write_secret_atomically(staged / FAILED, json.dumps(record).encode("utf-8"))
    except OSError as exc:  # the disk refuses even that: the next start tries again
        log.error("the reason of a failed restore cannot be kept in %s: %s", staged, exc)
    return RestoreOutcome(False, f"the staged restore was not applied: {reason}", plan)


def _verify(staged: Path, plan: RestorePlan, placements: list[dict[str, Any]]) -> None:
    """Every staged file whole, and the config still fit for this box."""
    for entry in placements:
        try:
            data = (staged / entry["file"]).read_bytes()
        except OSError as exc:
            raise BackupError(f"staged file {entry['file']} cannot be read: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BackupError(f"staged file {entry['file']} is damaged")
    config = next((e for e in placements if e["target"] == plan.config_path), None)
    if config is None:
        raise BackupError("the staged restore has no config file")
    text = (staged / config["file"]).read_text(encoding="utf-8")
    placed = {Path(e["target"]) for e in placements}
    _config_problems(text, Path(plan.config_path), placed)
    for entry in placements:
        if not entry["in_state"] and (why := _writable(Path(entry["target"]).parent)):
            raise BackupError(why)


def _moved_aside(state: Path) -> list[Path]:
    return [
        entry
        for entry in state.iterdir()
        if entry.name not in KEPT_IN_PLACE and not entry.name.startswith((REPLACED, PENDING))
    ]


def _apply(state: Path, staged: Path, placements: list[dict[str, Any]], aside: Path) -> None:
    """Each step can be taken again after a crash: the files say how far it went."""
    moved = aside / ".state-moved"
    if not moved.exists():
        (aside / "state").mkdir(exist_ok=True, mode=0o700)
        for old in _moved_aside(state):
            os.replace(old, aside / "state" / old.name)
        fsync_directory(aside / "state")
        write_secret_atomically(moved, b"")
    (aside / "outside").mkdir(exist_ok=True, mode=0o700)
    for number, entry in enumerate(placements):
        source, target = staged / entry["file"], Path(entry["target"])
        if entry["in_state"]:
            if source.exists():
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.replace(source, target)
                fsync_directory(target.parent)
            continue
        kept, done = aside / "outside" / str(number), aside / "outside" / f"{number}.done"
        if done.exists():
            continue
        noted = kept.with_suffix(".path")  # written once the old file (if any) is kept
        if not noted.exists():
            if target.exists():
                write_secret_atomically(kept, target.read_bytes())
            write_secret_atomically(noted, str(target).encode())
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret_atomically(target, source.read_bytes())
        write_secret_atomically(done, b"")


def _undo(state: Path, staged: Path, placements: list[dict[str, Any]], aside: Path) -> None:
    """Put the old state back after a failed apply; BackupError if even that fails."""
    try:
        for number, entry in reversed(list(enumerate(placements))):
            source, target = staged / entry["file"], Path(entry["target"])
            if entry["in_state"]:
                if not source.exists() and target.exists():
                    os.replace(target, source)
                continue
            kept = aside / "outside" / str(number)
            if kept.with_suffix(".path").exists():
                if kept.exists():
                    write_secret_atomically(target, kept.read_bytes())
                else:
                    target.unlink(missing_ok=True)
        for entry in _moved_aside(state):  # folders the apply made (secrets/...), emptied
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if (aside / "state").is_dir():
            for entry in (aside / "state").iterdir():
                os.replace(entry, state / entry.name)
        fsync_directory(state)
        shutil.rmtree(aside)
    except OSError as exc:
        raise BackupError(
            f"a staged restore failed and could not be undone ({exc}): the state directory "
            f"{state} is not whole. The old state is in {aside}/state, the restore's files in "
            f"{staged}; move them back by hand (or restore again with accessgw restore)"
        ) from exc


# --- restore in one go (the command line) --------------------------------------------------


def _refusal(state: Path, token: str) -> str | None:
    """Why a restore without ``force`` must not replace what is there, or None."""
    if (state / "journal.sqlite").exists():
        return (
            f"{state} already holds a gateway's journal: restore into an empty state "
            "directory, or pass --force to replace it (what it holds is moved aside to "
            f"{state}/{REPLACED}<time>/, never deleted)"
        )
    for entry in _plan_of(_pending(state, token))[1]:
        target = Path(entry["target"])
        if entry["in_state"] or not target.is_file():
            continue
        if hashlib.sha256(target.read_bytes()).hexdigest() != entry["sha256"]:
            return (
                f"{target} exists with other content: move it away first, or pass --force "
                f"to replace it (the old file is kept in {state}/{REPLACED}<time>/outside/)"
            )
    return None


@dataclass
class RestoreResult:
    """What a restore wrote."""

    gateway: str
    site: str
    config_path: Path
    state_dir: Path
    replaced: Path | None = None
    staged_only: bool = False


def restore_backup(
    sealed: bytes,
    passphrase: str,
    *,
    config_path: Path | str | None = None,
    state_dir: Path | str | None = None,
    force: bool = False,
    at_next_start: bool = False,
) -> RestoreResult:
    """Write a backup back: config, state directory, the files the config names.

    The same staging as the web UI's, then applied at once (the gateway must be stopped),
    or left for the gateway's next start (``at_next_start``: it may be running). What the
    state directory held is moved aside, never deleted; replacing a gateway's journal or
    files of other content needs ``force``. Blocking: call it from a thread.
    """
    plan = stage_restore(sealed, passphrase, config_path=config_path, state_dir=state_dir)
    target_state = Path(plan.state_dir)
    refusal = None if force or at_next_start else _refusal(target_state, plan.token)
    if refusal is not None:
        discard_pending(target_state, plan.token)
        raise BackupError(refusal)
    commit_restore(target_state, plan.token)
    result = RestoreResult(plan.gateway, plan.site, Path(plan.config_path), target_state)
    if at_next_start:
        result.staged_only = True
        return result
    outcome = apply_staged_restore(target_state)
    if outcome is None or not outcome.applied:
        raise BackupError(outcome.message if outcome else "the restore was not staged")
    result.replaced = outcome.replaced
    return result
