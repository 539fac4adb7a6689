"""The sandbox's certificate authority and server certificate (made with ``trustme``).

msal and azure-identity insist on an https authority, so the sandbox serves https. Its CA
is kept in the data directory (``ca.pem``, ``ca-key.pem``) and reused on the next start, so
a client configured with ``ca.pem`` keeps trusting the sandbox across restarts.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import trustme

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"


def _load_or_create_ca(data_dir: Path) -> trustme.CA:
    cert_path, key_path = data_dir / CA_FILE, data_dir / CA_KEY_FILE
    if cert_path.is_file() and key_path.is_file():
        return trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
    ca = trustme.CA(organization_name="relay sandbox", organization_unit_name="identity")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(ca.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(cert_path))
    return ca


def server_tls(data_dir: Path, hosts: list[str]) -> tuple[Path, ssl.SSLContext]:
    """The CA certificate's path and a server context with a fresh certificate for ``hosts``.

    Blocking (file I/O, key generation): call it in a worker thread from async code.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    ca = _load_or_create_ca(data_dir)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(context)
    return data_dir / CA_FILE, context
