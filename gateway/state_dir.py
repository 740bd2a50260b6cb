"""The state directory: databases and secrets, never in the config file or the repository.

Layout (created on first use, mode 0700; secret files 0600)::

    store.sqlite        entitlement store (credential values only as HMAC-SHA-256)
    journal.sqlite      decisions and events until the central system acknowledges them
    passes.sqlite       phone-pass replay cache (survives restarts)
    history.sqlite      recent passages, to rebuild local state at start
    commands.sqlite     ids of remote commands already carried out
    secrets/hmac.key    per-gateway secret for credential hashes (32 random bytes)
    secrets/osdp/<reader>.scbk   per-reader OSDP Secure Channel Base Key
    secrets/installer.hash       the installer password hash (web UI)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.errors import AccessGwError


class StateDir:
    """The gateway's state directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def ensure(self) -> StateDir:
        """Create the directory tree if needed; explain what to do when it cannot."""
        try:
            (self.path / "secrets" / "osdp").mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise AccessGwError(
                f"state directory {self.path} cannot be created: {exc.strerror}. "
                "Set gateway.state_dir to a writable path, or create it for the service user."
            ) from exc
        return self

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
        """A random secret kept in ``secrets/<name>``, made (0600) on first use."""
        self.ensure()
        path = self.path / "secrets" / name
        try:
            data = path.read_bytes()
            if len(data) == size:
                return data
            raise AccessGwError(
                f"secret {path} has {len(data)} bytes, expected {size}: "
                "it is damaged; restore it from backup (credential hashes depend on it)"
            )
        except FileNotFoundError:
            pass
        data = secrets.token_bytes(size)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return data

    def hmac_key(self) -> bytes:
        """The per-gateway secret that credential values are hashed with."""
        return self.secret("hmac.key")

    def osdp_scbk(self, reader_id: str) -> Path:
        """Where the OSDP reader's SCBK is kept (the driver reads and writes it)."""
        self.ensure()
        return self.path / "secrets" / "osdp" / f"{reader_id}.scbk"
