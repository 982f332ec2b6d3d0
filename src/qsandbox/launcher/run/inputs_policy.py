"""What `--workdir` (and an --include'd directory) leaves out: credential stores and private keys.

A project directory holds more than the code: a repository's `.git/config` can hold a token in a
remote's URL, `.envrc` and `.env` files hold variables, `.pypirc` and `.npmrc` registry tokens,
`.kube`, `.config/gcloud`, `.azure`, `.terraform.d` and `.cargo/credentials*` cloud and registry
credentials, and a key pair or certificate bundle lies about more often than anyone admits. None of
them is sent unless named on purpose with `--include PATH` (a file named there is sent whatever its
name); each one left out is named on stderr (transfer.collect's `left_out`).

The walk in transfer.py asks `leave_out(parts)` for every entry, `parts` being its path below the
directory sent, as a tuple of names.
"""

from __future__ import annotations

import fnmatch

# A file or directory with one of these names, wherever it is.
NAMES = frozenset(
    {
        ".ssh",
        ".gnupg",
        ".qiskit",
        ".aws",
        ".docker",
        ".netrc",
        ".git-credentials",
        ".env",
        ".git",  # config: a token in a remote's URL; hooks
        ".envrc",  # direnv: exported variables, tokens among them
        ".pypirc",
        ".npmrc",
        ".kube",
        ".azure",
        ".terraform.d",  # credentials.tfrc.json
    }
)
# Names matched as shell patterns, wherever they are.
PATTERNS = (".env.*", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12", "*.pfx")
# Paths matched by their last names: (parent directory's name, pattern of the name).
UNDER = ((".config", "gcloud"), (".cargo", "credentials*"))


def is_credential_store(name: str) -> bool:
    """Whether an entry of this name is left out wherever it is."""
    return name in NAMES or any(fnmatch.fnmatchcase(name, p) for p in PATTERNS)


def leave_out(parts: tuple[str, ...]) -> bool:
    """Whether the entry at `parts` (its names below the directory sent) is left out."""
    name = parts[-1]
    if is_credential_store(name):
        return True
    parent = parts[-2] if len(parts) > 1 else ""
    return any(parent == d and fnmatch.fnmatchcase(name, p) for d, p in UNDER)
