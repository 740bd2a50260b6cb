"""HTTPS for the web UI: a self-signed certificate made once and kept, or given files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import WebSection
from gateway.web.auth import write_secret


def tls_files(cfg: WebSection, state_dir: Path) -> tuple[Path, Path]:
    """The certificate and key to serve with (made on first use for ``self-signed``)."""
    if cfg.tls == "files" and cfg.cert_file and cfg.key_file:
        return cfg.cert_file, cfg.key_file
    cert = state_dir / "secrets" / "web-tls.crt"
    key = state_dir / "secrets" / "web-tls.key"
    if not (cert.exists() and key.exists()):
        make_self_signed(cert, key, cfg.listen, cfg.hosts)
    return cert, key


def make_self_signed(cert_path: Path, key_path: Path, listen: str, hosts: list[str]) -> None:
    """A 10-year certificate for the box's names and addresses (the browser asks once)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = socket.gethostname()
    dns = {name, f"{name}.local", "localhost", *(h for h in hosts if not _is_ip(h))}
    ips = {"127.0.0.1", *(h for h in [listen, *hosts] if _is_ip(h))} - {"0.0.0.0", "::"}
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(dns)]
    san += [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"accessgw {name}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret(key_path, pem_key.decode())
    write_secret(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode())


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True
