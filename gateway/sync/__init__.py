"""Central sync over MQTT (PROTOCOL.md): the link, signed envelopes, entitlement sync,
the check-in/event outbox, commands, status and occupancy."""
