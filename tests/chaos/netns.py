"""A network namespace with a veth pair to the host, for a gateway cut off and restored.

The test creates everything it talks to: the namespace ``agw-<pid>-<n>``, a veth pair
(host end ``agw<pid>h<n>``, namespace end ``agw<pid>n<n>``), addresses in 10.213.0.0/16
(a /30 per namespace, from the pid and a counter), loopback up inside. Everything is
removed by :meth:`NetNs.remove`, which the fixture calls as a finaliser, also when the test
fails; processes left in the namespace are killed by pid first.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from dataclasses import dataclass

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
TC = "/usr/sbin/tc" if os.path.exists("/usr/sbin/tc") else "tc"
_counter = itertools.count()


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=20)


def why_not_allowed() -> str | None:
    """Why this machine does not let a test make a network namespace, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN): not root"
    name = f"agw-probe-{os.getpid()}"
    try:
        made = _run(IP, "netns", "add", name, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` could not run: {exc}"
    if made.returncode != 0:
        return f"`ip netns add` is not allowed here: {made.stderr.strip()}"
    _run(IP, "netns", "del", name, check=False)
    try:
        _run(TC, "-V")
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return f"`tc` (iproute2) is not usable: {exc}"
    return None


@dataclass
class NetNs:
    """One namespace joined to the host by a veth pair."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str

    @classmethod
    def create(cls) -> NetNs:
        n = next(_counter)
        pid = os.getpid() % 100_000
        third, quad = divmod((pid * 8 + n) % (256 * 64), 64)  # one /30 of 10.213.0.0/16
        net = f"10.213.{third}"
        self = cls(
            name=f"agw-{pid}-{n}",
            host_if=f"agw{pid}h{n}",
            ns_if=f"agw{pid}n{n}",
            host_ip=f"{net}.{quad * 4 + 1}",
            ns_ip=f"{net}.{quad * 4 + 2}",
        )
        try:
            _run(IP, "netns", "add", self.name)
            _run(IP, "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run(IP, "link", "set", self.ns_if, "netns", self.name)
            _run(IP, "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _run(IP, "link", "set", self.host_if, "up")
            self.exec_("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            self.exec_("ip", "link", "set", self.ns_if, "up")
            self.exec_("ip", "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self

    @property
    def prefix(self) -> tuple[str, ...]:
        """The command prefix that runs a program inside the namespace."""
        return (IP, "netns", "exec", self.name)

    def exec_(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the namespace."""
        return _run(*self.prefix, *args, check=check)

    def cut(self) -> str:
        """A half-open link: every packet dropped both ways (no RST, no FIN reaches anyone).

        ``tc qdisc ... netem loss 100%`` on both ends; a kernel built without netem (some
        VM kernels: "Specified qdisc kind is unknown") gets ``pfifo limit 0`` instead, a
        queue that holds nothing, so it drops every packet just the same. Returns the qdisc
        used, for the report."""
        for qdisc in (("netem", "loss", "100%"), ("pfifo", "limit", "0")):
            made = _run(TC, "qdisc", "add", "dev", self.host_if, "root", *qdisc, check=False)
            if made.returncode == 0:
                self.exec_(TC, "qdisc", "add", "dev", self.ns_if, "root", *qdisc)
                return " ".join(qdisc)
            if "unknown" not in made.stderr:
                raise RuntimeError(f"tc qdisc add {' '.join(qdisc)}: {made.stderr.strip()}")
        raise RuntimeError("neither netem nor pfifo can drop packets on this kernel")

    def restore(self) -> None:
        """Take the netem qdiscs away again."""
        _run(TC, "qdisc", "del", "dev", self.host_if, "root", check=False)
        self.exec_(TC, "qdisc", "del", "dev", self.ns_if, "root", check=False)

    def link(self, up: bool) -> None:
        """The host end of the veth down or up (the namespace end loses its carrier)."""
        _run(IP, "link", "set", self.host_if, "up" if up else "down")

    def remove(self) -> None:
        """Kill what still runs inside, delete the namespace and the veth pair."""
        pids = _run(IP, "netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _run(IP, "link", "del", self.host_if, check=False)
        _run(IP, "netns", "del", self.name, check=False)
