"""The private PKI of one data dir's weed: a CA and a certificate per gRPC party, reused while valid.

Loopback only and never shared, so validity is long (CA 30 years, leaves 10) and nothing is
revoked: a file that is missing, unreadable, expired (or within 30 days of it), not matching its
key or not issued by the current CA is regenerated at the next start, and a new CA reissues every
leaf.  ECDSA P-256 keys: generated in about a millisecond, so a first start costs nothing visible.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from storage.embedded_s3.layout import LOOPBACK, write_private

# One certificate per weed component that serves gRPC, plus "client": weed's S3 gateway dials
# with [grpc.client], and so does an operator's ``weed shell``.
PARTIES = ("master", "volume", "filer", "s3", "client")
CA_VALIDITY = datetime.timedelta(days=30 * 365)
LEAF_VALIDITY = datetime.timedelta(days=10 * 365)
RENEW_BEFORE = datetime.timedelta(days=30)
# Certificates start a little in the past, so a clock stepped back slightly does not void them.
BACKDATE = datetime.timedelta(minutes=5)

CA_NAME = "nvr embedded S3 CA"


def common_name(party: str) -> str:
    """The subject CN of ``party``'s certificate, the name weed's allowed_commonNames lists."""
    return f"nvr-{party}"


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of the PKI: the CA certificate and each party's (cert, key)."""

    ca: Path
    ca_key: Path
    pairs: Mapping[str, tuple[Path, Path]] = field(default_factory=dict)

    def all_files(self) -> list[Path]:
        """Every file of the PKI, the CA key included."""
        files = [self.ca, self.ca_key]
        for cert, key in self.pairs.values():
            files += [cert, key]
        return files


def ensure_pki(tls_dir: Path, now: datetime.datetime | None = None) -> tuple[TlsFiles, list[str]]:
    """The PKI under ``tls_dir`` (0700, files 0600), completed; also the names (re)generated."""
    now = now or datetime.datetime.now(datetime.UTC)
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)  # mkdir's mode is masked by the umask and ignored if it exists
    made: list[str] = []
    ca_cert_path, ca_key_path = tls_dir / "ca.crt", tls_dir / "ca.key"
    ca = _load_valid(ca_cert_path, ca_key_path, None, now)
    new_ca = ca is None
    if ca is None:
        ca = _issue_ca(now)
        _write_pair(ca_cert_path, ca_key_path, *ca)
        made.append("ca")
    pairs = {}
    for party in PARTIES:
        cert_path, key_path = tls_dir / f"{party}.crt", tls_dir / f"{party}.key"
        if new_ca or _load_valid(cert_path, key_path, ca[0], now) is None:
            _write_pair(cert_path, key_path, *_issue_leaf(party, ca, now))
            made.append(party)
        pairs[party] = (cert_path, key_path)
    files = TlsFiles(ca_cert_path, ca_key_path, pairs)
    for path in files.all_files():
        os.chmod(path, 0o600)  # reused files may have been loosened since
    return files, made


Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _load_valid(
    cert_path: Path, key_path: Path, issuer: x509.Certificate | None, now: datetime.datetime
) -> Pair | None:
    """The pair at these paths if it is still good for use (``issuer`` None: a CA), else None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if _public_bytes(cert.public_key()) != _public_bytes(key.public_key()):
        return None
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - RENEW_BEFORE:
        return None
    try:
        cert.verify_directly_issued_by(issuer or cert)  # a CA is self-signed
    except (ValueError, TypeError, InvalidSignature):
        return None
    return cert, key


def _public_bytes(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _issue_ca(now: datetime.datetime) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        _builder(name, name, key.public_key(), now, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue_leaf(party: str, ca: Pair, now: datetime.datetime) -> Pair:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name(party))])
    # Each server also dials the others with its own certificate (weed reuses cert/key as the
    # client identity); only the client cert never serves.
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if party != "client":
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), now, LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        # weed does not check host names; the SAN only makes the certificate well-formed.
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key, now: datetime.datetime,
    validity: datetime.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key) -> None:
    # Key first: a crash between the two leaves a certificate that does not match its key,
    # which the next start detects and reissues.
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
