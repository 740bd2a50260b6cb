"""The state directory: databases and secrets, never in the config file or the repository.

Layout (every directory 0700, every file 0600: the process runs under umask 077)::

    store.sqlite        entitlement store (credential values only as HMAC-SHA-256)
    journal.sqlite      decisions and events until the central system acknowledges them
    passes.sqlite       phone-pass replay cache (survives restarts)
    history.sqlite      recent passages, to rebuild local state at start
    commands.sqlite     ids of remote commands already carried out
    secrets/hmac.key    per-gateway secret for credential hashes (32 random bytes)
    secrets/osdp/<reader>.scbk   per-reader OSDP Secure Channel Base Key
    secrets/installer.hash       the installer password hash (web UI)

Outside systemd nothing else keeps these private, so the gateway does it itself: it
creates every missing level 0700, takes group/other permissions away from what it finds
(and says so), and writes secrets atomically so a crash never leaves a half-written key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from gateway.errors import AccessGwError

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
_SHARED_BITS = 0o077  # any permission for group or other


def make_files_private() -> int:
    """Set the process umask to 077 (files 0600, directories 0700); return the old one.

    Called first thing by every command that writes state (``run``, ``demo``, ``restore``),
    so SQLite's databases, their WAL files and anything a library creates are private too.
    """
    return os.umask(PRIVATE_UMASK)


def fsync_directory(path: Path) -> None:
    """Make a rename or a new name in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_with(path: Path, data: bytes) -> Path:
    """A new private file beside ``path`` holding ``data``, flushed to disk."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def write_secret_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync the directory.

    A crash leaves either the old secret or the new one, never an empty or partial file.
    """
    tmp = _temp_with(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_directory(path.parent)


def create_secret_atomically(path: Path, data: bytes) -> bool:
    """Give ``path`` the content ``data`` unless it exists; True if this call created it.

    A hard link never overwrites, so two processes racing to make the first key end up
    sharing the one that won, instead of each keeping a different key.
    """
    tmp = _temp_with(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_directory(path.parent)
    return True


def _keep_private(path: Path, mode: int, what: str) -> None:
    """Take group/other permissions off ``path``; refuse with the fix when that fails."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not info.st_mode & _SHARED_BITS:
        return
    old = stat.S_IMODE(info.st_mode)
    try:
        os.chmod(path, mode)
    except OSError as exc:
        raise AccessGwError(
            f"{what} {path} can be read by other users (mode {old:04o}) and cannot be made "
            f"private: {exc.strerror}. Fix: chown -R <service user> {path.parent} && "
            f"chmod {mode:04o} {path}"
        ) from exc
    log.warning(
        "%s %s could be read by other users (mode %04o): made private (%04o). "
        "If it is a secret that others may have copied, replace it.",
        what,
        path,
        old,
        mode,
    )


def _missing_levels(path: Path) -> Iterator[Path]:
    """The directories from the first missing ancestor of ``path`` down to ``path``."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    return reversed(missing)


class StateDir:
    """The gateway's state directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def secrets_dir(self) -> Path:
        """Where the secret files live."""
        return self.path / "secrets"

    def ensure(self) -> StateDir:
        """Create the tree (every new level 0700) and keep it private; explain failures."""
        try:
            for level in _missing_levels(self.secrets_dir / "osdp"):
                with contextlib.suppress(FileExistsError):
                    level.mkdir(mode=DIR_MODE)
                os.chmod(level, DIR_MODE)  # mkdir's mode is filtered by the umask
            for directory in (self.path, self.secrets_dir, self.secrets_dir / "osdp"):
                _keep_private(directory, DIR_MODE, "state directory")
            for file in self._files():
                what = "secret" if self.secrets_dir in file.parents else "state file"
                _keep_private(file, FILE_MODE, what)
        except OSError as exc:
            raise AccessGwError(
                f"state directory {self.path} cannot be created or made private: "
                f"{exc.strerror}. Set gateway.state_dir to a writable path, or create it "
                "for the service user (install -d -m 0700 -o <user> <dir>)."
            ) from exc
        return self

    def _files(self) -> Iterator[Path]:
        """The regular files at the top level and anywhere under ``secrets/``."""
        for entry in self.path.iterdir():
            if entry.is_file() and not entry.is_symlink():
                yield entry
        for root, _dirs, files in os.walk(self.secrets_dir):
            for name in files:
                yield Path(root) / name

    @property
    def store(self) -> Path:
        """The entitlement store database."""
        return self.path / "store.sqlite"

    @property
    def journal(self) -> Path:
        """The journal database."""
        return self.path / "journal.sqlite"

    @property
    def passes(self) -> Path:
        """The phone-pass replay cache database."""
        return self.path / "passes.sqlite"

    @property
    def commands(self) -> Path:
        """Ids of remote commands already carried out (replay refusal survives restarts)."""
        return self.path / "commands.sqlite"

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random secret kept in ``secrets/<name>``, made (0600, atomically) on first use."""
        self.ensure()
        path = self.secrets_dir / name
        if not path.exists():
            create_secret_atomically(path, secrets.token_bytes(size))
        data = path.read_bytes()
        if len(data) != size:
            raise AccessGwError(
                f"secret {path} has {len(data)} bytes, expected {size}: "
                "it is damaged; restore it from backup (credential hashes depend on it)"
            )
        return data

    def write_secret(self, name: str, data: bytes) -> Path:
        """Keep ``data`` as ``secrets/<name>`` (0600), replacing it atomically."""
        self.ensure()
        path = self.secrets_dir / name
        write_secret_atomically(path, data)
        return path

    def hmac_key(self) -> bytes:
        """The per-gateway secret that credential values are hashed with."""
        return self.secret("hmac.key")

    def osdp_scbk(self, reader_id: str) -> Path:
        """Where the OSDP reader's SCBK is kept (the driver reads and writes it)."""
        self.ensure()
        return self.secrets_dir / "osdp" / f"{reader_id}.scbk"
