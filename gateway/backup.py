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
Restore refuses to overwrite a state directory that already has a journal (a live
gateway) unless told to (``force``); the gateway must be stopped while it runs.
"""

from __future__ import annotations

import io
import json
import secrets
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway import __version__
from gateway.config import Config, parse_config
from gateway.errors import AccessGwError
from gateway.state_dir import StateDir, fsync_directory, write_secret_atomically

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


@dataclass
class RestoreResult:
    """What a restore wrote."""

    gateway: str
    site: str
    config_path: Path
    state_dir: Path
    written: list[Path] = field(default_factory=list)


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


# --- restore -----------------------------------------------------------------------------


def read_backup(sealed: bytes, passphrase: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the members of a backup, checked before anything is written."""
    plain = unseal(sealed, passphrase)
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r") as tar:
            for info in tar.getmembers():
                name = PurePosixPath(info.name)
                if not info.isfile() or name.is_absolute() or ".." in name.parts:
                    raise BackupError(f"the backup holds an unsafe entry {info.name!r}")
                handle = tar.extractfile(info)
                assert handle is not None  # a regular file
                members[info.name] = handle.read()
    except tarfile.TarError as exc:
        raise BackupError(f"the backup is damaged: {exc}") from exc
    try:
        manifest = json.loads(members.pop("manifest.json"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise BackupError("the backup has no readable manifest") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r} is not {FORMAT}")
    if "config.toml" not in members:
        raise BackupError("the backup has no config file")
    return manifest, members


def _with_state_dir(text: str, state_dir: Path) -> str:
    """The config text with ``gateway.state_dir`` set (comments and layout kept)."""
    import tomlkit

    document = tomlkit.parse(text)
    gateway = document["gateway"]
    assert isinstance(gateway, dict)
    gateway["state_dir"] = str(state_dir)
    return tomlkit.dumps(document)


def _write(path: Path, data: bytes, written: list[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret_atomically(path, data)
    written.append(path)


def restore_backup(
    sealed: bytes,
    passphrase: str,
    *,
    config_path: Path | str | None = None,
    state_dir: Path | str | None = None,
    force: bool = False,
) -> RestoreResult:
    """Write a backup back: config, state directory, the files the config names.

    ``config_path`` and ``state_dir`` default to where they were when the backup was made;
    a different state directory is written into the restored config. Blocking: call it
    from a thread when a loop is running, and never while the gateway runs.
    """
    manifest, members = read_backup(sealed, passphrase)
    text = members["config.toml"].decode("utf-8")
    target_config = Path(config_path or manifest["config_path"])
    target_state = Path(state_dir or manifest["state_dir"])
    if Path(manifest["state_dir"]) != target_state:
        text = _with_state_dir(text, target_state)
    config = parse_config(text, str(target_config))
    if (target_state / "journal.sqlite").exists() and not force:
        raise BackupError(
            f"{target_state} already holds a gateway's journal: stop that gateway and restore "
            "into an empty state directory (or pass --force to replace it)"
        )
    outside = manifest.get("outside", [])
    for index, entry in enumerate(outside):
        path = Path(entry["path"])
        if path.exists() and path.read_bytes() != members[f"outside/{index}"] and not force:
            raise BackupError(
                f"{entry['key']} {path} exists with other content: move it away first "
                "(or pass --force to replace it)"
            )
    result = RestoreResult(config.gateway.id, config.gateway.site, target_config, target_state)
    target_state.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in manifest.get("databases", []):
        for suffix in ("-wal", "-shm"):  # a stale WAL must never be replayed onto the copy
            (target_state / f"{name}{suffix}").unlink(missing_ok=True)
        _write(target_state / name, members[f"state/{name}"], result.written)
    for relative in manifest.get("secrets", []):
        _write(target_state / "secrets" / relative, members[f"secrets/{relative}"], result.written)
    for index, entry in enumerate(outside):
        _write(Path(entry["path"]), members[f"outside/{index}"], result.written)
    _write(target_config, text.encode("utf-8"), result.written)
    fsync_directory(target_state)
    StateDir(target_state).ensure()  # every level 0700, every file 0600, as `run` keeps it
    return result
