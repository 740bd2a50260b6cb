"""accessgw: the access-control gateway daemon.

The data flows one way, and the module names follow it:
reader -> credential -> decision -> journal -> door -> check-in -> outbox -> MQTT.
"""

__version__ = "0.1.0"
