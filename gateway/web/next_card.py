""" "Show me the next card": the installer asks a reader for the next credential it sees.

The daemon offers every read here before deciding it (the door works as usual). When the
installer has asked for that reader, the read is handed over in full, in memory only: it
is shown to the signed-in installer and never logged or journalled.
"""

from __future__ import annotations

import asyncio

from gateway.readers import CredentialRead


class NextCard:
    """Readers an installer is waiting on, and the read each gets. Used on the gateway loop."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[CredentialRead]]] = {}

    def offer(self, read: CredentialRead) -> None:
        """A reader produced ``read``: hand it to whoever waits on that reader."""
        for future in self._waiting.pop(read.reader, []):
            if not future.done():
                future.set_result(read)

    async def next_read(self, reader: str, wait: float) -> CredentialRead | None:
        """The next read of ``reader`` within ``wait`` seconds, or None."""
        future: asyncio.Future[CredentialRead] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(reader, [])
        if len(waiting) >= 8:  # a few browser tabs at most; the oldest asker just times out
            waiting.pop(0)
        waiting.append(future)
        try:
            return await asyncio.wait_for(future, wait)
        except TimeoutError:
            return None
        finally:
            if future in self._waiting.get(reader, []):
                self._waiting[reader].remove(future)
