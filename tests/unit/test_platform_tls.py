"""The per-run TLS material: a CA the script side can trust, a server cert for every host."""

import datetime as dt

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from qsandbox.common.platform_constants import HOSTNAMES
from qsandbox.platform.tls import make_tls


def _load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_server_cert_verifies_for_every_host_name():
    tls = make_tls([*HOSTNAMES, "localhost"])
    ca, cert = _load(tls.ca_cert_pem), _load(tls.server_cert_pem)
    verifier_builder = PolicyBuilder().store(Store([ca]))
    for host in [*HOSTNAMES, "localhost"]:
        verifier = verifier_builder.build_server_verifier(x509.DNSName(host))
        chain = verifier.verify(cert, [])
        assert chain[-1] == ca


def test_cert_not_valid_for_other_hosts_or_other_ca():
    tls, other = make_tls(["quantum.cloud.ibm.com"]), make_tls(["quantum.cloud.ibm.com"])
    cert = _load(tls.server_cert_pem)
    wrong_host = PolicyBuilder().store(Store([_load(tls.ca_cert_pem)]))
    try:
        wrong_host.build_server_verifier(x509.DNSName("example.com")).verify(cert, [])
        raise AssertionError("certificate accepted for a host it does not name")
    except x509.verification.VerificationError:
        pass
    wrong_ca = PolicyBuilder().store(Store([_load(other.ca_cert_pem)]))
    try:
        wrong_ca.build_server_verifier(x509.DNSName("quantum.cloud.ibm.com")).verify(cert, [])
        raise AssertionError("certificate accepted under another run's CA")
    except x509.verification.VerificationError:
        pass


def test_ca_is_short_lived_ca_and_key_is_not_in_ca_pem():
    tls = make_tls(["iam.cloud.ibm.com"])
    ca = _load(tls.ca_cert_pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=2, minutes=1)
    assert b"PRIVATE KEY" not in tls.ca_cert_pem
    assert b"PRIVATE KEY" in tls.server_key_pem
