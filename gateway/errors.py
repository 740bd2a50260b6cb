"""The gateway's one exception hierarchy.

Every message should tell an installer or a developer what to do next, e.g.
"serial port /dev/ttyUSB0 not found: is the reader plugged in? ports seen: /dev/ttyAMA0".
"""

from __future__ import annotations


class AccessGwError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(AccessGwError):
    """The configuration file is missing, unreadable or invalid.

    ``problems`` lists every problem found, each naming the key (and line where known).
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class InvalidSet(AccessGwError):
    """An entitlement set, delta or record is not valid against ENTITLEMENTS.md.

    The whole set is refused; ``problems`` names the first problems found, with their paths.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid entitlement set: " + "; ".join(problems[:10]))


class BadMessage(AccessGwError):
    """A message from the broker was dropped (bad JSON, bad signature, wrong site...).

    ``reason`` is short and safe to log; the payload itself is never put in the message.
    """

    def __init__(self, reason: str, topic: str = "") -> None:
        self.reason = reason
        self.topic = topic
        super().__init__(f"bad message on {topic or '?'}: {reason}")


class StoreError(AccessGwError):
    """The entitlement store could not be opened, read or written."""


class JournalError(AccessGwError):
    """The journal could not be opened or written durably."""


class HardwareError(AccessGwError):
    """A reader, relay board or input could not be reached or misbehaved."""


class DeviceNotFound(HardwareError):
    """A serial port, GPIO chip or network device does not exist."""


class ProtocolError(HardwareError):
    """A peer sent something that does not follow its wire protocol."""


class LinkError(AccessGwError):
    """The MQTT link failed (refused, TLS/certificate, DNS, timeout)."""
