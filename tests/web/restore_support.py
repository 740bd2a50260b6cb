"""Another gateway's backup, for the restore tests: a gateway ``door-2`` with a journal
backlog, an OSDP key, its identity and its own installer password, backed up and gone."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.backup import create_backup, read_backup, seal
from gateway.daemon import Gateway
from gateway.validation import validate_file
from gateway.web.auth import hash_path, set_password

PASSPHRASE = "door two's long passphrase"
PASSWORD = "door two installer password"
OSDP_READER = "entry-osdp"
OSDP_KEY = b"00112233445566778899aabbccddeeff\n"


@dataclass
class Backup:
    """The archive and what the gateway it came from had."""

    sealed: bytes
    hmac_key: bytes
    identity: str
    password_hash: bytes
    last_seq: int
    backlog: int


def other_config(state: Path, web: str) -> str:
    return (
        "# door 2: the box that failed\n"
        f'[gateway]\nid = "door-2"\nsite = "demo-club"\nstate_dir = "{state}"\n'
        'clock = "trusted"\n[mqtt]\nenabled = false\n'
        f"{web}"
        '[[boards]]\nid = "io"\nprofile = "fake-io"\n'
        '[[doors]]\nid = "main-in"\nzone = "gym"\ndirection = "in"\n'
        'lock = { board = "io", index = 0 }\nunlock_seconds = 0.05\n'
        '[[doors]]\nid = "side-in"\nzone = "gym"\ndirection = "in"\n'
        'lock = { board = "io", index = 1 }\nunlock_seconds = 0.05\n'
    )


def other_gateway_backup(folder: Path, web: str = "[web]\nenabled = false\n") -> Backup:
    """Run door-2 for a moment (a backlog of check-ins), then back it up."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "door-2.toml"
    config.write_text(other_config(folder / "state", web))

    async def run() -> Backup:
        gateway = Gateway(validate_file(config).valid_config())
        await gateway.start()
        for _ in range(3):
            await gateway.open_once("main-in", 1)
        gateway.state_dir.osdp_scbk(OSDP_READER).write_bytes(OSDP_KEY)
        set_password(gateway.state_dir.secrets_dir, PASSWORD)
        await gateway.stop()
        backlog = await _pending(gateway)
        return Backup(
            b"",
            gateway.state_dir.hmac_key(),
            gateway.identity.public_key_b64,
            hash_path(gateway.state_dir.secrets_dir).read_bytes(),
            gateway.journal.last_seq,
            backlog,
        )

    umask = os.umask(0o077)  # as `accessgw run` keeps its state
    try:
        made = asyncio.run(run())
    finally:
        os.umask(umask)
    made.sealed = create_backup(config, PASSPHRASE)
    return made


async def _pending(gateway: Gateway) -> int:
    from gateway.backup import journal_facts

    return journal_facts(gateway.state_dir.journal).backlog


def resealed(sealed: bytes, change: Callable[[dict[str, Any], dict[str, bytes]], None]) -> bytes:
    """The backup with its members changed by ``change``, sealed again with its passphrase
    (a file made by something else than ``accessgw backup``, or tampered with)."""
    manifest, members = read_backup(sealed, PASSPHRASE)
    change(manifest, members)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in {**members, "manifest.json": json.dumps(manifest).encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return seal(buffer.getvalue(), PASSPHRASE)
