"""Readers that libnfc drives (ACR122U, PN533 USB, PN532 on UART...), through pynfc.

Optional extra ``libnfc`` (``pynfc==0.1.1``, which needs Debian's ``libfreefare-dev``,
bringing libnfc). pynfc's calls block, so every one of them runs on one worker thread
per reader (libnfc devices are not thread-safe), never on the event loop. The device is
named by a libnfc connstring: the reader's ``port`` may be a whole connstring
(``pn532_uart:/dev/ttyUSB0:115200``) or a path that the profile's ``libnfc_driver``
is put in front of; with no port, the profile's driver alone (``acr122_usb``) takes the
first such device.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, TypeVar

from pydantic import Field

from drivers.serial_port import Backoff, ports_seen
from gateway.errors import HardwareError
from gateway.profiles import DeviceAddress, DriverSettings, ReaderDriverSpec, ReaderSecrets
from gateway.readers import CredentialRead, HealthCallback, Reader, utc_now

log = logging.getLogger(__name__)

T = TypeVar("T")

INSTALL_HINT = (
    "install the extra (pip install 'accessgw[libnfc]') and Debian's libraries "
    "(apt-get install libfreefare-dev libnfc6)"
)


class LibnfcMissing(HardwareError):
    """pynfc, libnfc or libfreefare is not installed."""


def load_pynfc() -> ModuleType:
    """pynfc's ctypes bindings; LibnfcMissing says what to install when they cannot load."""
    try:
        from pynfc import nfc
    except ImportError as exc:
        raise LibnfcMissing(f"the libnfc driver needs pynfc ({exc}): {INSTALL_HINT}") from exc
    except OSError as exc:  # pynfc loads libfreefare.so (and libnfc) when imported
        raise LibnfcMissing(
            f"pynfc cannot load libfreefare/libnfc ({exc}): {INSTALL_HINT}"
        ) from exc
    bindings: ModuleType = nfc
    return bindings


class LibnfcSettings(DriverSettings):
    """What a libnfc profile may set (``[settings]``, overridden by ``options``)."""

    libnfc_driver: str = "pn532_uart"
    baudrate: int | None = Field(default=None, gt=0)
    poll_interval: float = Field(default=0.2, ge=0, le=10)
    reopen_max: float = Field(default=5.0, gt=0, le=300)


def connstring(port: str | None, settings: LibnfcSettings) -> str:
    """The libnfc connstring for a reader's port and its profile's settings."""
    if port and ":" in port and not port.startswith("/"):
        return port  # already a connstring
    if not port:
        return settings.libnfc_driver
    baud = f":{settings.baudrate}" if settings.baudrate else ""
    return f"{settings.libnfc_driver}:{port}{baud}"


class LibnfcDevice:
    """One open libnfc device. Every method blocks: call them on the reader's worker thread."""

    def __init__(self, nfc: ModuleType, connstring: str) -> None:
        self.nfc = nfc
        self.connstring = connstring
        self._ctx = ctypes.POINTER(nfc.struct_nfc_context)()
        nfc.nfc_init(ctypes.byref(self._ctx))
        if not self._ctx:
            raise HardwareError("libnfc could not start (nfc_init failed: out of memory?)")
        name = nfc.nfc_connstring()
        name.value = connstring.encode()
        self._dev = nfc.nfc_open(self._ctx, name)
        if not self._dev:
            nfc.nfc_exit(self._ctx)
            raise HardwareError(
                f"libnfc cannot open {connstring}: is the reader plugged in (and an ACR122U "
                f"not claimed by pcscd)? ports seen: {', '.join(ports_seen()) or 'none'}"
            )
        if nfc.nfc_initiator_init(self._dev) < 0:
            error = self._error()
            self.close()
            raise HardwareError(f"libnfc cannot start {connstring} as a reader: {error}")
        # poll, do not wait for a card: select gives up after a few tries
        nfc.nfc_device_set_property_bool(self._dev, nfc.NP_INFINITE_SELECT, False)

    def _error(self) -> str:
        return ctypes.string_at(self.nfc.nfc_strerror(self._dev)).decode(errors="replace")

    def poll(self) -> str | None:
        """The UID (upper-case hex) of a type A card in the field, or None."""
        nfc = self.nfc
        modulation = nfc.nfc_modulation()
        modulation.nmt, modulation.nbr = nfc.NMT_ISO14443A, nfc.NBR_106
        target = nfc.nfc_target()
        found = nfc.nfc_initiator_select_passive_target(
            self._dev, modulation, None, 0, ctypes.byref(target)
        )
        if found < 0:
            raise HardwareError(f"libnfc reader {self.connstring} failed: {self._error()}")
        if found == 0:
            return None
        nai = target.nti.nai
        uid = bytes(nai.abtUid[: min(int(nai.szUidLen), 10)])
        nfc.nfc_initiator_deselect_target(self._dev)
        return uid.hex().upper() if uid else None

    def close(self) -> None:
        """Close the device and libnfc's context (once)."""
        if self._dev:
            self.nfc.nfc_close(self._dev)
            self._dev = None
        if self._ctx:
            self.nfc.nfc_exit(self._ctx)
            self._ctx = None


class LibnfcReader(Reader):
    """A libnfc device polled for type A cards, on its own worker thread."""

    def __init__(
        self,
        reader_id: str,
        connstring: str,
        settings: LibnfcSettings | None = None,
        on_health: HealthCallback | None = None,
        nfc: ModuleType | None = None,
    ) -> None:
        super().__init__(reader_id, on_health)
        self.connstring = connstring
        self.settings = settings or LibnfcSettings()
        self.nfc = nfc or load_pynfc()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"libnfc-{reader_id}")
        self._worker_stopped = False
        self._device: LibnfcDevice | None = None
        self._closed = False

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, func, *args)

    async def reads(self) -> AsyncIterator[CredentialRead]:
        """Open, poll, yield UIDs; report offline and reopen with back-off on failures."""
        backoff = Backoff(0.2, self.settings.reopen_max)
        while not self._closed:
            try:
                self._device = await self._run(LibnfcDevice, self.nfc, self.connstring)
                backoff.reset()
                self.report(True, f"libnfc device {self.connstring}")
                while not self._closed:
                    uid = await self._run(self._device.poll)
                    if uid is not None:
                        yield CredentialRead(reader=self.id, kind="nfc", value=uid, at=utc_now())
                    await asyncio.sleep(self.settings.poll_interval)
            except HardwareError as exc:
                if not self._closed:
                    self.report(False, str(exc))
            finally:
                self._release()
            if not self._closed:
                await backoff.sleep()

    def _release(self) -> None:
        device, self._device = self._device, None
        if device is not None and not self._worker_stopped:
            self._worker.submit(device.close)  # after any call still running: same thread

    async def close(self) -> None:
        """Stop polling, close the device on its thread, end the thread."""
        self._closed = True
        self._release()
        self._worker_stopped = True
        await asyncio.get_running_loop().run_in_executor(None, self._worker.shutdown, True)


def create_reader(
    reader_id: str,
    address: DeviceAddress,
    settings: LibnfcSettings,
    secrets: ReaderSecrets,
    on_health: HealthCallback,
) -> Reader:
    """The driver factory named by ``driver = "libnfc"`` profiles."""
    return LibnfcReader(reader_id, connstring(address.port, settings), settings, on_health)


def _any_port(address: DeviceAddress, settings: LibnfcSettings) -> list[tuple[str, str]]:
    return []  # an empty port takes the first device libnfc finds


READER_DRIVER = ReaderDriverSpec(LibnfcSettings, create_reader, _any_port)
