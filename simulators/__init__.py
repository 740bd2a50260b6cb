"""Simulated hardware and a simulated central system, speaking the real wire protocols.

Usable by installers (``accessgw simulate ...``) and by the tests alike.
"""
