"""The installer's sign-in: a one-time setup code, one password, sessions, slowed guessing.

There is no default password. On first start the gateway makes a setup code (logged, and
shown by ``accessgw setup-code`` to root); whoever enters it first sets the installer
password, and the code is gone. The password is kept as an argon2id hash in the state
directory (``secrets/installer.hash``, 0600); ``accessgw passwd`` replaces it from the box's
console. Sessions live in memory only (a restart signs everyone out) and end after 30 idle
minutes. Failed attempts slow the next ones, per client and for everybody together.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.errors import AccessGwError
from gateway.state_dir import write_secret_atomically
from gateway.web.i18n import t

IDLE_SECONDS = 30 * 60
MIN_PASSWORD = 10
MAX_PASSWORD = 256
MAX_SESSIONS = 64
# the code's alphabet has no look-alikes (0/O, 1/I/L): it is read off a console
_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_path(secrets_dir: Path) -> Path:
    """Where the installer password hash is kept."""
    return secrets_dir / "installer.hash"


def setup_code_path(secrets_dir: Path) -> Path:
    """Where the one-time setup code is kept until it is used."""
    return secrets_dir / "setup.code"


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) atomically: a crash leaves the old or the new."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret_atomically(path, text.encode("utf-8"))


def password_problem(password: str, language: str = "en") -> str | None:
    """Why ``password`` cannot be the installer password, if it cannot (a sentence)."""
    if len(password) < MIN_PASSWORD:
        return t(language, "password.short", n=MIN_PASSWORD)
    if len(password) > MAX_PASSWORD:
        return t(language, "password.long", n=MAX_PASSWORD)
    return None


def set_password(secrets_dir: Path, password: str) -> None:
    """Hash ``password`` (argon2id) and keep it as the installer password."""
    problem = password_problem(password)
    if problem:
        raise AccessGwError(problem)
    write_secret(hash_path(secrets_dir), HASHER.hash(password) + "\n")
    setup_code_path(secrets_dir).unlink(missing_ok=True)


def read_setup_code(secrets_dir: Path) -> str | None:
    """The pending setup code, or None once a password is set."""
    try:
        return setup_code_path(secrets_dir).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def new_setup_code() -> str:
    """A fresh code: 12 characters in groups of four (about 59 bits)."""
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
    return "-".join(raw[i : i + 4] for i in range(0, 12, 4))


def _normal_code(text: str) -> str:
    # ASCII only: compare_digest refuses non-ASCII text (a typed "é" was a 500)
    return "".join(ch for ch in text.upper() if ch.isascii() and ch.isalnum())


@dataclass
class Session:
    """One signed-in browser: its CSRF token and when it was last used."""

    token: str
    csrf: str
    client: str
    last_seen: float


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)


class LoginThrottle:
    """Slows guessing: after failures, a client (and, past a bound, everybody) must wait.

    Per client the wait doubles with each failure in the last 15 minutes (1 s, 2 s, 4 s ...
    up to 5 minutes); when more than 20 attempts failed in 5 minutes across all clients,
    every attempt waits at least 10 s, so a LAN-wide spray gains nothing from many addresses.
    """

    WINDOW = 15 * 60
    MAX_WAIT = 300.0
    GLOBAL_WINDOW = 5 * 60
    GLOBAL_LIMIT = 20
    GLOBAL_WAIT = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._clients: dict[str, _Failures] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def wait_for(self, client: str) -> float:
        """Seconds ``client`` must still wait before its next attempt (0: go ahead)."""
        now = self.clock()
        with self._lock:
            self._forget(now)
            wait = 0.0
            failures = self._clients.get(client)
            if failures and failures.times:
                delay = min(self.MAX_WAIT, 2.0 ** (len(failures.times) - 1))
                wait = max(wait, failures.times[-1] + delay - now)
            if len(self._all) > self.GLOBAL_LIMIT:
                wait = max(wait, self._all[-1] + self.GLOBAL_WAIT - now)
            return max(0.0, wait)

    def failed(self, client: str) -> None:
        """Count one failed attempt of ``client``."""
        now = self.clock()
        with self._lock:
            if len(self._clients) > 10_000:  # bounded memory under an address spray
                self._clients.clear()
            self._clients.setdefault(client, _Failures()).times.append(now)
            self._all.append(now)

    def succeeded(self, client: str) -> None:
        """A correct password: this client starts afresh."""
        with self._lock:
            self._clients.pop(client, None)

    def _forget(self, now: float) -> None:
        while self._all and self._all[0] < now - self.GLOBAL_WINDOW:
            self._all.popleft()
        for key in [k for k, f in self._clients.items() if f.times[-1] < now - self.WINDOW]:
            del self._clients[key]


class InstallerAuth:
    """The installer's password, the setup code and the signed-in sessions."""

    def __init__(
        self,
        secrets_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.secrets_dir = secrets_dir
        self.clock = clock
        self.idle_seconds = idle_seconds
        self.throttle = LoginThrottle(clock)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    # --- first start ----------------------------------------------------------------------

    def needs_setup(self) -> bool:
        """Whether no installer password is set yet."""
        return not hash_path(self.secrets_dir).exists()

    def ensure_setup_code(self) -> str | None:
        """Make the setup code on first start (kept until used); None once a password is set."""
        if not self.needs_setup():
            return None
        code = read_setup_code(self.secrets_dir)
        if code is None:
            code = new_setup_code()
            write_secret(setup_code_path(self.secrets_dir), code + "\n")
        return code

    def use_setup_code(self, code: str, password: str) -> bool:
        """Set the password with the one-time code; False when the code is wrong or used."""
        with self._lock:
            expected = read_setup_code(self.secrets_dir)
            if expected is None or not self.needs_setup():
                return False
            if not hmac.compare_digest(_normal_code(code), _normal_code(expected)):
                return False
            set_password(self.secrets_dir, password)
            return True

    # --- signing in -----------------------------------------------------------------------

    def check_password(self, password: str) -> bool:
        """Whether ``password`` is the installer's (slow on purpose: argon2id)."""
        try:
            stored = hash_path(self.secrets_dir).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return False
        if not password or len(password) > MAX_PASSWORD:
            return False
        try:
            return HASHER.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def open_session(self, client: str) -> Session:
        """A new session for a browser that just signed in."""
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), client, now)
        with self._lock:
            self._drop_idle(now)
            if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes: memory stays bounded
                oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
                del self._sessions[oldest.token]
            self._sessions[session.token] = session
        return session

    def session(self, token: str | None) -> Session | None:
        """The live session for a cookie value (and mark it used), or None."""
        if not token:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.last_seen > self.idle_seconds:
                del self._sessions[token]
                return None
            session.last_seen = now
            return session

    def close_session(self, token: str | None) -> None:
        """Sign out."""
        with self._lock:
            self._sessions.pop(token or "", None)

    def close_all(self) -> None:
        """Sign everybody out (the password changed)."""
        with self._lock:
            self._sessions.clear()

    def _drop_idle(self, now: float) -> None:
        for token in [
            key for key, s in self._sessions.items() if now - s.last_seen > self.idle_seconds
        ]:
            del self._sessions[token]
