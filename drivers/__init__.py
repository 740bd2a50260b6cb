"""Hardware drivers: one module per family, each behind a small async interface of the gateway's."""
