"""The egress allowlist and the proxy's log reading, without an engine."""

from __future__ import annotations

import re
import typing

import pytest

from qsandbox.common.errors import UsageError
from qsandbox.inside.proxy import Refusals, config
from qsandbox.launcher.egress import ALLOWLIST, HOSTS, RUNTIME_REGIONS, host_pattern, proxy_environment


def allowed(target: str, patterns: tuple[str, ...] = ALLOWLIST) -> bool:
    # Python's re agrees with POSIX ERE on these patterns: anchors, classes, escaped dots, groups.
    return any(re.search(p, target) for p in patterns)


@pytest.mark.parametrize(
    "target",
    [
        "iam.cloud.ibm.com:443",
        "private.iam.cloud.ibm.com:443",
        "api.global-search-tagging.cloud.ibm.com:443",
        "globalcatalog.cloud.ibm.com:443",
        "quantum.cloud.ibm.com:443",
        "eu-de.quantum.cloud.ibm.com:443",
        "private.us-east.quantum.cloud.ibm.com:443",
        "private.eu-de.quantum.cloud.ibm.com:443",
    ],
)
def test_what_the_client_contacts_is_allowed(target):
    assert allowed(target)


@pytest.mark.parametrize(
    "target",
    [
        "quantum.cloud.ibm.com:8443",
        "quantum.cloud.ibm.com:80",
        "quantum.cloud.ibm.com.evil.test:443",
        "evilquantum.cloud.ibm.com:443",
        "iam.cloud.ibm.com.:443",
        "user@iam.cloud.ibm.com:443",
        "s3.us-east.cloud-object-storage.appdomain.cloud:443",
        "1.2.3.4:443",
        "[::1]:443",
        "http://quantum.cloud.ibm.com/api",
        "cloud.ibm.com:443",
        "xquantum.cloud.ibm.com:443x",
        # Made-up names under IBM's domains: a wildcard let these through, and the proxy resolved
        # them, so the name itself (the key in hex) reached its resolver (issue 23, finding 8).
        "exfil0123456789abcdef.quantum.cloud.ibm.com:443",
        "private.k0123456789abcdef.quantum.cloud.ibm.com:443",
        "x.eu-de.quantum.cloud.ibm.com:443",
        "private.x.eu-de.quantum.cloud.ibm.com:443",
        "us-east.quantum.cloud.ibm.com:443",  # us-east is quantum.cloud.ibm.com; the client never asks for this
        "eu-gb.quantum.cloud.ibm.com:443",
        "x.iam.cloud.ibm.com:443",
    ],
)
def test_everything_else_is_refused(target):
    assert not allowed(target)


def test_every_entry_is_one_exact_name():
    """No class, quantifier, alternation or group: each pattern matches one host name and no other."""
    assert len(ALLOWLIST) == len(HOSTS)
    for pattern, host in zip(ALLOWLIST, HOSTS, strict=True):
        assert re.fullmatch(r"\^[a-z0-9-]+(\\\.[a-z0-9-]+)+:443\$", pattern), pattern
        assert pattern.replace("\\", "")[1:-1] == host + ":443"


def test_the_regions_are_the_installed_clients():
    """The Runtime API's regions are those the client knows (accounts/account.py, RegionType); a
    client that learns another region fails here, and the list gets its two names."""
    from qiskit_ibm_runtime.accounts.account import RegionType

    known = {r for arg in typing.get_args(RegionType) for r in typing.get_args(arg)}
    assert known == set(RUNTIME_REGIONS)
    assert allowed("quantum.cloud.ibm.com:443")  # us-east: no prefix (api/utils.py)
    for region in RUNTIME_REGIONS:
        assert allowed(f"private.{region}.quantum.cloud.ibm.com:443")
        assert allowed(f"{region}.quantum.cloud.ibm.com:443") == (region != "us-east")


def test_allow_host_adds_exactly_one_host_on_443():
    p = host_pattern("Data.Example.org")
    assert p == r"^data\.example\.org:443$"  # only dots escaped: `\-` (re.escape) is undefined in POSIX ERE
    assert host_pattern("eu-gb.quantum.cloud.ibm.com") == r"^eu-gb\.quantum\.cloud\.ibm\.com:443$"
    assert allowed("data.example.org:443", (p,))
    assert not allowed("data.example.org:80", (p,))
    assert not allowed("xdata.example.org:443", (p,))
    assert not allowed("data.example.org.evil:443", (p,))
    for bad in ("https://x.org", "x.org:443", "1.2.3.4", "localhost", "a..b", ""):
        with pytest.raises(UsageError, match="give a host name"):
            host_pattern(bad)


def test_proxy_environment_sets_both_cases_and_no_empty_value():
    env = dict(proxy_environment())
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        assert env[name] == "http://qsandbox-egress:8888"
    assert env["NO_PROXY"] == env["no_proxy"] == "127.0.0.1,localhost"


def test_config_is_default_deny_on_host_and_port():
    text = config(8888, "10.9.0.0/16", "/tmp/allow.txt")
    for line in ("Allow 10.9.0.0/16", "ConnectPort 443", "FilterURLs On", "FilterType ere", "FilterDefaultDeny Yes"):
        assert line in text.splitlines()
    assert "LogFile" not in text and "PidFile" not in text and "User" not in text  # nothing on disk


def test_refusals_read_from_tinyproxy_log_lines():
    """Lines as tinyproxy 1.11.1 writes them (seen in this image)."""
    r = Refusals()
    lines = [
        "CONNECT   Nov 27 15:50:49.785 [7]: Request (file descriptor 4): CONNECT quantum.cloud.ibm.com:8443 HTTP/1.1",
        "INFO      Nov 27 15:50:49.785 [7]: Refused CONNECT method on port 8443",
        'NOTICE    Nov 27 15:50:49.891 [7]: Proxying refused on filtered url "evil.com:443"',
        'NOTICE    Nov 27 15:50:49.891 [7]: Proxying refused on filtered url "http://evil.test/steal?key=SECRET"',
        'INFO      Nov 27 15:50:49.891 [7]: Established connection to host "iam.cloud.ibm.com" using fd 5.',
    ]
    assert [r.feed(line) for line in lines] == [
        None,
        "quantum.cloud.ibm.com:8443",
        "evil.com:443",
        "evil.test:80",
        None,
    ]
