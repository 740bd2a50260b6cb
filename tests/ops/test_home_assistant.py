"""Home Assistant discovery (issue 13 point 3), against Mosquitto."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.passes import public_key_b64
from simulators.pn532 import Pn532Simulator
from tests.integration.gateways import present, running
from tests.support.broker import Broker, plain_listener, write_password_file
from tests.support.ports import free_port

NODE = "accessgw_club_gw-1"
BASE = "accessgw/club/gw-1"

# What Home Assistant's MQTT integration requires of each component's discovery config
# (home-assistant.io/integrations/<component>.mqtt), and the values it accepts.
REQUIRED = {
    "lock": {"command_topic", "state_topic"},
    "binary_sensor": {"state_topic"},
    "sensor": {"state_topic"},
    "event": {"state_topic", "event_types"},
}
DEVICE_CLASSES = {"binary_sensor": {"door", "connectivity", "opening", "problem"}}
STATE_CLASSES = {"measurement", "total", "total_increasing"}


def config(
    tmp_path, port: int, nfc: str, *, enabled: bool = True, commands: bool = False, mqtt: str = ""
) -> str:
    key = public_key_b64(Ed25519PrivateKey.generate())
    return f"""
[gateway]
id = "gw-1"
site = "club"
state_dir = "{tmp_path / "state"}"
clock = "trusted"
[central]
public_key = "{key}"
[mqtt]
host = "127.0.0.1"
port = {port}
{mqtt}
[web]
enabled = false
[homeassistant]
enabled = {str(enabled).lower()}
commands = {str(commands).lower()}
[[boards]]
id = "io"
profile = "fake-io"
[[doors]]
id = "in"
zone = "gym"
direction = "in"
lock = {{ board = "io", index = 0 }}
contact = {{ board = "io", index = 1 }}
[[readers]]
id = "nfc-in"
profile = "pn532-hsu"
door = "in"
port = "{nfc}"
"""


async def retained(port: int, topic_filter: str, within: float = 1.5) -> dict[str, bytes]:
    """Every retained message under ``topic_filter`` a new subscriber gets."""
    found: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="ha-test") as client:
        await client.subscribe(topic_filter, qos=1)
        try:
            async with asyncio.timeout(within):
                async for message in client.messages:
                    if not message.retain:  # a live copy: what counts is the stored one
                        continue
                    if message.payload:
                        found[str(message.topic)] = bytes(message.payload)
        except TimeoutError:
            pass
    return found


async def states(port: int, topic: str, want: str, within: float = 5.0, **login: str) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="ha-state", **login) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(within):
            async for message in client.messages:
                if message.payload == want.encode():
                    return


def check_component(component: str, cfg: dict[str, Any]) -> None:
    assert REQUIRED[component] <= set(cfg), (component, cfg)
    assert cfg["unique_id"].startswith(NODE) and cfg["device"]["identifiers"] == [NODE]
    assert cfg["availability_topic"] == f"{BASE}/availability"
    if component in DEVICE_CLASSES:
        assert cfg["device_class"] in DEVICE_CLASSES[component]
    if component == "sensor":
        assert cfg["state_class"] in STATE_CLASSES
    if component == "event":
        assert cfg["event_types"] == ["granted", "denied"]


async def wait_for_configs(port: int, want: int) -> dict[str, bytes]:
    for _ in range(50):
        found = await retained(port, f"homeassistant/+/{NODE}/+/config", within=0.5)
        if len(found) >= want:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(found)


async def test_discovery_is_retained_valid_and_the_lock_follows_the_door(tmp_path, broker):
    with Pn532Simulator() as nfc:
        async with running(config(tmp_path, broker.port, nfc.path, commands=True)) as gateway:
            found = await wait_for_configs(broker.port, 5)
            by_kind = {}
            for topic, payload in found.items():
                prefix, component, node, object_id, last = topic.split("/")
                assert (prefix, node, last) == ("homeassistant", NODE, "config")
                cfg = json.loads(payload)
                check_component(component, cfg)
                by_kind[(component, object_id)] = cfg
            assert set(by_kind) == {
                ("lock", "door_in"),
                ("binary_sensor", "door_in_contact"),
                ("event", "door_in_decision"),
                ("binary_sensor", "reader_nfc-in"),
                ("sensor", "zone_gym_occupancy"),
            }
            lock = by_kind[("lock", "door_in")]
            assert (await retained(broker.port, f"{BASE}/availability")) == {
                f"{BASE}/availability": b"online"
            }
            await states(broker.port, lock["state_topic"], "LOCKED")
            await states(broker.port, f"{BASE}/reader/nfc-in/online", "ON")
            await states(broker.port, f"{BASE}/zone/gym/occupancy", "0")

            await gateway.set_mode("in", "unlock")
            await states(broker.port, lock["state_topic"], "UNLOCKED")
            await gateway.set_mode("in", "normal")
            await states(broker.port, lock["state_topic"], "LOCKED")
            for level in (True, False):  # the contact follows the door, whatever its wiring
                gateway.boards["io"].set_input(1, level)
                await asyncio.sleep(0.2)
                is_open = gateway.doors["in"].status()["contact"] == "open"
                await states(broker.port, f"{BASE}/door/in/contact", "ON" if is_open else "OFF")

            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="ha-ev") as client:
                await client.subscribe(f"{BASE}/door/in/decision", qos=1)
                await present(gateway, "nfc", "04FFFFFF")  # nobody's card
                async with asyncio.timeout(5):
                    message = await anext(aiter(client.messages))
            assert json.loads(bytes(message.payload)) == {
                "event_type": "denied",
                "reason": "unknown_credential",
            }  # no member id, no name: HA needs neither

            # commands asked for, but the broker signs nobody in: HA cannot unlock
            assert not gateway.home_assistant.discovery.commands
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="intruder") as c:
                await c.publish(lock["command_topic"], b"UNLOCK", qos=1)
            await asyncio.sleep(0.5)
            assert gateway.doors["in"].status()["lock"] == "locked"

        # switched off: every entity of this gateway is removed from Home Assistant
        async with running(config(tmp_path, broker.port, nfc.path, enabled=False)):
            for _ in range(50):
                if not await retained(broker.port, f"homeassistant/+/{NODE}/+/config", 0.3):
                    break
            else:
                raise AssertionError("discovery configs still retained")
            assert not (tmp_path / "state" / "homeassistant.announced").exists()
            assert await retained(broker.port, f"{BASE}/availability", 0.3) == {}


async def test_home_assistant_locks_and_unlocks_a_door_on_a_broker_that_signs_in(tmp_path):
    port = free_port()
    users = write_password_file(tmp_path / "passwd", {"gw-1": "s3cret", "ha": "h0me-assistant"})
    broker = Broker(tmp_path / "broker", port=port, extra=plain_listener(port, users)).start()
    secret = tmp_path / "mqtt.password"
    secret.write_text("s3cret\n")
    login = {"username": "ha", "password": "h0me-assistant"}
    mqtt = f'username = "gw-1"\npassword_file = "{secret}"'
    try:
        with Pn532Simulator() as nfc:
            text = config(tmp_path, port, nfc.path, commands=True, mqtt=mqtt)
            async with running(text) as gateway:
                for _ in range(100):
                    if gateway.home_assistant.connected.is_set():
                        break
                    await asyncio.sleep(0.05)
                assert gateway.home_assistant.discovery.commands
                command = f"{BASE}/door/in/set"
                async with aiomqtt.Client("127.0.0.1", port, identifier="ha", **login) as ha:
                    for _ in range(25):  # the gateway subscribes just after announcing
                        await ha.publish(command, b"UNLOCK", qos=1)
                        await asyncio.sleep(0.2)
                        if gateway.doors["in"].mode == "unlock":
                            break
                    await states(port, f"{BASE}/door/in/lock", "UNLOCKED", **login)
                    assert gateway.doors["in"].mode == "unlock"
                    await ha.publish(command, b"LOCK", qos=1)
                    await states(port, f"{BASE}/door/in/lock", "LOCKED", **login)
                    assert gateway.doors["in"].mode == "normal"
    finally:
        broker.stop()
