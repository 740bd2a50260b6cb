""" "Test connection": try broker settings before they are saved, and say why they fail.

One throwaway connection with the settings as they would be used: the name resolved
(DNS), the TCP connection (refused, unreachable, timeout), TLS (the broker's certificate
verified against the CA; this gateway's client certificate accepted), the login, and a
subscription to the site's topics as the gateway makes it, and an empty message under the
gateway's own topics (the broker's ACL; Mosquitto says "not authorised" to MQTT 5 only). The words
are the link's own (:func:`gateway.sync.link.explain_connect_failure`), so the installer
reads at setup what the gateway would log at run time.

The test connects with a client id of its own, a clean session and no will, so it
leaves nothing behind on the broker (a broker that binds the client id to the
certificate may still end the running gateway's session for a moment: it reconnects).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gateway.config import MqttSection
from gateway.errors import LinkError
from gateway.logs import cleanup
from gateway.sync.link import Link
from gateway.sync.topics import gw_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionTest:
    """The outcome of a test connection, in words."""

    ok: bool
    stage: str  # dns | tcp | tls | login | acl | settings | ok
    message: str

    def as_json(self) -> dict[str, Any]:
        """For the web API."""
        return {"ok": self.ok, "stage": self.stage, "message": self.message}


class _TestLink(Link):
    """A link that connects once, as a client of its own, and leaves no session behind."""

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs = super()._client_kwargs()
        kwargs["identifier"] = f"{self.client_id}.test"
        kwargs.pop("will", None)
        kwargs.pop("properties", None)  # no session expiry: the session ends with us
        if "clean_start" in kwargs:
            kwargs["clean_start"] = True
        else:
            kwargs["clean_session"] = True
        return kwargs

    async def try_once(self) -> None:
        client = await self._connect()
        try:
            await self._subscribe(client)
            self._client = client
            self._connected.set()
            # Mosquitto grants any subscription and applies read rules on delivery, but it
            # answers a publish its ACL denies (MQTT 5): an empty, unretained message under
            # the gateway's own topics, which consumers ignore, shows the ACL knows it
            await self.publish(gw_topic(self.site, self.gw, "test"), b"", qos=1)
        finally:
            self._connected.clear()
            self._client = None
            with cleanup(log, "MQTT check: disconnecting", logging.DEBUG):
                await asyncio.wait_for(client.__aexit__(None, None, None), 2.0)


def _stage(message: str) -> str:
    low = message.lower()
    for stage, words in (
        ("dns", ("cannot resolve",)),
        ("acl", ("subscription", "refused the message")),
        ("tls", ("tls", "certificate", "ca_file")),
        ("login", ("username", "password", "not authorised", "refused the connection")),
        ("tcp", ("nothing accepts", "unreachable", "no answer", "connection failed")),
    ):
        if any(w in low for w in words):
            return stage
    return "settings"


async def try_broker(
    mqtt: MqttSection, site: str, gw: str, *, within: float = 10.0
) -> ConnectionTest:
    """Connect once with ``mqtt`` as gateway ``gw`` of ``site``; what happened, in words."""
    link = _TestLink(
        mqtt, site, gw, status_payload=lambda: {"state": "online"}, connect_timeout=within
    )
    try:
        await asyncio.wait_for(link.try_once(), within + 5)
    except LinkError as exc:
        return ConnectionTest(False, _stage(str(exc)), str(exc))
    except TimeoutError:
        return ConnectionTest(
            False, "tcp", f"MQTT broker {link.broker}: no answer within {within + 5:g} s"
        )
    except UnicodeError:  # the resolver's IDNA step refuses the name (was a traceback)
        return ConnectionTest(False, "dns", f"cannot resolve {mqtt.host!r}: not a host name")
    return ConnectionTest(
        True,
        "ok",
        f"connected to {link.broker} and subscribed to site {site}'s topics as {gw}",
    )
