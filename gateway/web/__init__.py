"""The installer's local web UI: sign-in, dashboard, events, commissioning tools, "why".

Served from a process of its own (:mod:`gateway.web.server`) so it never slows the doors;
README "The web UI" tells installers how to reach and use it.
"""
