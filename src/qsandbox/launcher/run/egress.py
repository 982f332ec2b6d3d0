"""The key can only go to IBM: the hosts a run's sandbox may reach, by their exact names.

With `--platform ibm` (and `--network allowlist`, the default) the sandbox has no network at all
(network mode `none`); its one way out is the launcher's relay (launcher/run/relay.py), which lets a
CONNECT through only to a name on this list, on port 443: the hosts qiskit-ibm-runtime 0.51 really
contacts (read from its source: accounts/account.py, accounts/utils.py, api/auth.py, api/utils.py):

- `iam.cloud.ibm.com` (IAM tokens), `private.iam.cloud.ibm.com` (private endpoints);
- `api.global-search-tagging.cloud.ibm.com`, `globalcatalog.cloud.ibm.com` (instance lookup);
- the Runtime API of each region the client knows (`RegionType` in accounts/account.py: us-east,
  eu-de): `quantum.cloud.ibm.com` (us-east has no prefix), `eu-de.quantum.cloud.ibm.com`, and
  with private endpoints `private.us-east.quantum.cloud.ibm.com`,
  `private.eu-de.quantum.cloud.ibm.com`.

Every entry is one exact name: no wildcard. A pattern such as `[a-z0-9-]+.quantum.cloud.ibm.com`
would let a script CONNECT to `<the key in hex>.quantum.cloud.ibm.com`, and resolving that name
would carry the key to whatever resolver answers for it. A refused CONNECT is never resolved, so
with exact names no name the script makes up leaves the machine. A region IBM adds later is
`--allow-host <region>.quantum.cloud.ibm.com` until the list here names it.

No object storage, no telemetry host. `--allow-host HOST` adds hosts (443 only).
"""

from __future__ import annotations

import re

from ...common.errors import UsageError

RUNTIME_REGIONS = ("us-east", "eu-de")
"""The Runtime API's regions, as the client knows them (`RegionType` in accounts/account.py)."""
HOSTS = (
    "iam.cloud.ibm.com",
    "private.iam.cloud.ibm.com",
    "api.global-search-tagging.cloud.ibm.com",
    "globalcatalog.cloud.ibm.com",
    *(("" if r == "us-east" else f"{r}.") + "quantum.cloud.ibm.com" for r in RUNTIME_REGIONS),
    *(f"private.{r}.quantum.cloud.ibm.com" for r in RUNTIME_REGIONS),
)
"""Every host the client contacts, by its exact name (api/utils.py, api/auth.py, accounts/utils.py)."""
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")


def allowed_name(host: str) -> str:
    """One more allowed host, as the relay compares it (443 only); UsageError for anything else."""
    name = host.strip().lower()
    if not _HOST.match(name) or name.rsplit(".", 1)[-1].isdigit():  # no IP literals: names only
        raise UsageError(f"--allow-host {host!r}: give a host name such as api.example.org (no port, scheme or IP)")
    return name


def allowlist(extra: tuple[str, ...]) -> frozenset[str]:
    """IBM's hosts and the user's `--allow-host` names."""
    return frozenset(HOSTS) | {allowed_name(h) for h in extra}
