"""Safe defaults for the broker link: no plain MQTT across a network without saying so.

Check-ins, commands and entitlement sets ride on this link. Plain TCP to another host
lets anyone on that network read them and a password sent over it; a loopback broker
(a bridge on the same box) is the one place plain TCP is fine.
"""

from __future__ import annotations

from gateway.config import MqttSection, is_loopback
from gateway.errors import ConfigError


def broker_warnings(mqtt: MqttSection) -> list[str]:
    """What ``check-config`` warns about in the broker settings (nothing when all is well)."""
    if not mqtt.enabled or mqtt.tls is not None:
        return []
    warnings = []
    if not is_loopback(mqtt.host):
        allowed = " (allowed by mqtt.allow_insecure)" if mqtt.allow_insecure else ""
        warnings.append(
            f"mqtt: plain TCP without TLS to {mqtt.host}:{mqtt.port}{allowed}: anyone on the "
            "network can read check-ins and forge commands. Add [mqtt.tls] with ca_file "
            "(and a client certificate), and the broker's TLS port (8883)"
        )
    if mqtt.password_file is not None:
        warnings.append(
            f"mqtt: the broker password is sent in clear over plain TCP to {mqtt.host}: "
            "add [mqtt.tls] so it is encrypted"
        )
    return warnings


def refuse_insecure_broker(mqtt: MqttSection, path: str) -> None:
    """``run`` will not talk plain MQTT to another host unless the config says it may."""
    if not mqtt.enabled or mqtt.tls is not None or mqtt.allow_insecure:
        return
    if is_loopback(mqtt.host):
        return
    raise ConfigError(
        path,
        [
            f"mqtt: plain TCP without TLS to {mqtt.host}:{mqtt.port} is refused: add "
            "[mqtt.tls] with ca_file (port 8883), or set mqtt.allow_insecure = true for a "
            "test bench on a network you trust"
        ],
    )
