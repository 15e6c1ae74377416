"""weed's ``security.toml`` for the embedded S3: mutual TLS on every gRPC port, JWT on volume and filer HTTP.

Without it weed's four gRPC ports and the volume server's HTTP port serve anyone on 127.0.0.1
(``weed shell`` lists, reads and deletes the raw bucket).  With it:

* gRPC (and its ``/tmp/seaweedfs-*-grpc-*.sock`` mirrors, served by the same servers) requires a
  client certificate issued by this data dir's CA (``pki``) whose CN is one of ours;
* the volume server serves and accepts a needle only with a JWT signed by a key that the master,
  filer and S3 gateway hold (``[jwt.signing]`` for writes and deletes, ``[jwt.signing.read]``
  for reads), and the filer's HTTP (disabled anyway) likewise (``[jwt.filer_signing]``).

The keys (``jwt.json``) and the PKI (``conf/tls/``) are generated once and kept 0600; the file is
rewritten from them on every start.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from pathlib import Path

from storage.embedded_s3.layout import write_private
from storage.embedded_s3.pki import PARTIES, TlsFiles, common_name, ensure_pki
from storage.errors import EmbeddedS3Error

# The security.toml sections of the four signing keys, and their names in jwt.json.
JWT_SECTIONS = {
    "signing": "jwt.signing",
    "signing_read": "jwt.signing.read",
    "filer_signing": "jwt.filer_signing",
    "filer_signing_read": "jwt.filer_signing.read",
}
# weed's default lifetime of a token it mints for one request.
JWT_EXPIRES_SECONDS = 10
# The gRPC servers weed runs; "client" only dials.
GRPC_SERVERS = ("master", "volume", "filer", "s3")


def prepare_security(s3_dir: Path, log: logging.Logger | logging.LoggerAdapter) -> str:
    """The text of security.toml for ``s3_dir``, generating the PKI and keys it needs if missing."""
    tls, made = ensure_pki(s3_dir / "conf" / "tls")
    if made:
        log.info("embedded S3: issued TLS certificates for %s in %s", ", ".join(made), tls.ca.parent)
    return security_toml(tls, load_or_create_jwt_keys(s3_dir, log))


def load_or_create_jwt_keys(
    s3_dir: Path, log: logging.Logger | logging.LoggerAdapter
) -> dict[str, str]:
    """The four JWT signing keys of this data dir (``jwt.json``, 0600), generated on first use."""
    path = s3_dir / "jwt.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = None
    except (OSError, ValueError) as e:
        raise EmbeddedS3Error(f"embedded S3 JWT keys {path} are unreadable: {e}") from e
    if data is not None:
        if not (isinstance(data, dict) and all(isinstance(data.get(k), str) and data[k]
                                               for k in JWT_SECTIONS)):
            raise EmbeddedS3Error(f"embedded S3 JWT keys {path} are malformed")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("embedded S3: %s had mode %o, restricting it to 0600", path, mode)
            os.chmod(path, 0o600)
        return {k: data[k] for k in JWT_SECTIONS}
    # URL-safe base64: nothing for TOML to escape; 256 bits each, they are HMAC-SHA256 keys.
    keys = {k: secrets.token_urlsafe(32) for k in JWT_SECTIONS}
    write_private(path, json.dumps(keys, indent=2).encode())
    log.info("embedded S3: generated JWT signing keys in %s", path)
    return keys


def security_toml(tls: TlsFiles, jwt_keys: dict[str, str]) -> str:
    """weed's security.toml text: the keys of ``jwt_keys`` and the certificates of ``tls``."""
    lines = ["# Written by nvr at every start of the embedded S3: edits are overwritten.", ""]
    for name, section in JWT_SECTIONS.items():
        lines += [f"[{section}]", f"key = {_s(jwt_keys[name])}",
                  f"expires_after_seconds = {JWT_EXPIRES_SECONDS}", ""]
    # weed's default once a signing key is set, pinned: the volume UI is not authenticated.
    lines += ["[access]", "ui = false", ""]
    # Only the CN list decides who gets in (among certificates of our CA): no wildcard domain.
    lines += ["[grpc]", f"ca = {_s(tls.ca)}", 'allowed_wildcard_domain = ""', ""]
    allowed = ",".join(common_name(p) for p in PARTIES)
    for server in GRPC_SERVERS:
        cert, key = tls.pairs[server]
        lines += [f"[grpc.{server}]", f"cert = {_s(cert)}", f"key = {_s(key)}",
                  f"allowed_commonNames = {_s(allowed)}", ""]
    cert, key = tls.pairs["client"]
    lines += ["[grpc.client]", f"cert = {_s(cert)}", f"key = {_s(key)}", ""]
    return "\n".join(lines)


def _s(value: object) -> str:
    # A JSON string is a valid TOML basic string for anything a path or key holds here.
    return json.dumps(str(value))
