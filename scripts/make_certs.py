#!/usr/bin/env python3
"""Make a test CA and TLS certificates for one site's broker, central system and gateways.

    python scripts/make_certs.py OUT_DIR --site oslo-sentrum --gw door-1 --gw door-2

writes into OUT_DIR (mode 0700, keys 0600; never commit them: .gitignore skips *.crt/*.key):

    ca.crt ca.key              the test CA (broker ``cafile``, gateway ``mqtt.tls.ca_file``)
    server.crt server.key      the broker's certificate (SAN: localhost, 127.0.0.1, ::1, --host)
    central.crt central.key    CN ``central``: reads and writes the whole tree
    {site}.{gw}.crt/.key       CN ``{site}/gw/{gw}``: one pair per gateway
    acl.conf                   the ACL for these identities (from config/mosquitto/acl.conf)

The CN convention, why it has a ``/`` in it, and why each gateway still needs a short ``user``
block are explained in config/mosquitto/acl.conf. Keys are ECDSA P-256: fast to make on a Pi
and accepted by Mosquitto. For production use the site's own CA; this is for tests and demos.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ID = re.compile(r"^[a-z0-9-]{1,64}$")
VALID_DAYS = 825


def gateway_cn(site: str, gw: str) -> str:
    """The certificate CN (= the broker username) of gateway ``gw`` at ``site``."""
    return f"{site}/gw/{gw}"


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as written on disk."""

    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "accessgw test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class CertificateAuthority:
    """A self-signed CA kept in ``out_dir`` that issues server and client certificates."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("accessgw test CA"))
            .issuer_name(_name("accessgw test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        _write_cert(self.ca_file, self.cert)
        _write_key(out_dir / "ca.key", self.key)

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM)."""
        return self.out_dir / "ca.crt"

    def issue(self, stem: str, cn: str, *, server_hosts: list[str] | None = None) -> Issued:
        """Issue ``{stem}.crt``/``{stem}.key`` for ``cn``; a server certificate if hosts given."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server_hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in server_hosts]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.out_dir / f"{stem}.crt", self.out_dir / f"{stem}.key")
        _write_cert(issued.cert, cert)
        _write_key(issued.key, key)
        return issued


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def acl_text(gateways: dict[str, list[str]]) -> str:
    """The Mosquitto ACL for central and the given gateways ({site: [gw, ...]})."""
    template = Path(__file__).resolve().parent.parent / "config" / "mosquitto" / "acl.conf"
    head = template.read_text(encoding="utf-8").split("# --- per gateway ---")[0]
    blocks = [gateway_acl_block(site, gw) for site, gws in sorted(gateways.items()) for gw in gws]
    return head + "# --- per gateway ---\n" + "\n".join(blocks)


def gateway_acl_block(site: str, gw: str) -> str:
    """The ``user`` block that lets one gateway read its own site's shared topics."""
    return (
        f"user {gateway_cn(site, gw)}\n"
        f"topic read acs/v1/{site}/entitlements/delta\n"
        f"topic read acs/v1/{site}/time\n"
        f"topic read acs/v1/{site}/gw/+/checkin\n"
        f"topic read acs/v1/{site}/gw/+/occupancy\n"
    )


@dataclass(frozen=True)
class SiteCerts:
    """Everything make_site wrote."""

    ca_file: Path
    server: Issued
    central: Issued
    gateways: dict[str, Issued]
    acl_file: Path


def make_site(
    out_dir: Path, site: str, gws: list[str], hosts: list[str] | None = None
) -> SiteCerts:
    """Make a CA, a broker certificate, central's and each gateway's certificate, and the ACL."""
    for value in (site, *gws):
        if not ID.match(value):
            raise ValueError(f"{value!r} is not an id of [a-z0-9-]{{1,64}}")
    ca = CertificateAuthority(out_dir)
    server = ca.issue("server", "accessgw broker", server_hosts=_hosts(hosts))
    central = ca.issue("central", "central")
    gateways = {gw: ca.issue(f"{site}.{gw}", gateway_cn(site, gw)) for gw in gws}
    acl_file = out_dir / "acl.conf"
    acl_file.write_text(acl_text({site: gws}), encoding="utf-8")
    return SiteCerts(ca.ca_file, server, central, gateways, acl_file)


def _hosts(extra: list[str] | None) -> list[str]:
    hosts = ["localhost", "127.0.0.1", "::1"]
    return hosts + [h for h in extra or [] if h not in hosts]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--site", required=True)
    parser.add_argument("--gw", action="append", required=True, help="a gateway id (repeat)")
    parser.add_argument("--host", action="append", help="the broker's DNS name or IP (repeat)")
    args = parser.parse_args(argv)
    try:
        made = make_site(args.out_dir, args.site, args.gw, args.host)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"CA {made.ca_file}; broker {made.server.cert}; central {made.central.cert}")
    for gw, issued in made.gateways.items():
        print(f"gateway {gw}: {issued.cert} {issued.key} (CN {gateway_cn(args.site, gw)})")
    print(f"ACL {made.acl_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
