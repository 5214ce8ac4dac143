"""Fixtures for the Workspace ONE Access client tests: the stand-in on 127.0.0.1 and clients pointing at it."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import pytest

from bot.systems.workspace_one import WorkspaceOneClient
from sandbox.workspace_one import WorkspaceOneStandIn


@pytest.fixture
async def ws1():
    async with WorkspaceOneStandIn() as stand_in:
        yield stand_in


@pytest.fixture
async def make_client():
    """make_client(stand_in, **config_overrides) -> an open client; all are closed at the end of the test."""
    clients: list[WorkspaceOneClient] = []

    def make(stand_in: WorkspaceOneStandIn, *, secrets=None, session=None, **overrides) -> WorkspaceOneClient:
        overrides.setdefault("timeout_seconds", 5)
        client = WorkspaceOneClient(stand_in.config(**overrides), secrets or stand_in.secrets(), session=session)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def self_signed(tmp_path) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate for 127.0.0.1 (trusted by nobody)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tenant.sandbox.invalid")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tenant.pem", tmp_path / "tenant.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context
