"""--workdir's leave-outs (launcher/run/inputs_policy.py): every credential store and private key the
issue names, wherever it lies, and nothing an ordinary project holds."""

from __future__ import annotations

import pytest

from qsandbox.launcher.run.inputs_policy import leave_out
from qsandbox.launcher.run.transfer import CREDENTIAL_NAMES


@pytest.mark.parametrize(
    "path",
    [
        ".git",
        ".envrc",
        ".pypirc",
        ".npmrc",
        ".kube",
        ".config/gcloud",
        ".azure",
        ".terraform.d",
        ".cargo/credentials",
        ".cargo/credentials.toml",
        "id_rsa",
        "id_rsa.pub",
        "keys/id_ed25519",
        "deploy/id_ecdsa_ci",
        "certs/server.pem",
        "tls/server.key",
        "client.p12",
        "sub/.git",
        ".env.local",
        *CREDENTIAL_NAMES,  # what transfer.py left out already stays out
    ],
)
def test_left_out(path):
    assert leave_out(tuple(path.split("/")))


@pytest.mark.parametrize(
    "path",
    [
        "fit.py",
        "data/results.csv",
        ".config/matplotlib",
        "gcloud/notes.txt",  # not under .config
        "credentials.md",  # not under .cargo
        ".cargo/config.toml",
        "keyboard.py",
        "monkey.json",
        ".gitignore",
        "notebooks/pem_analysis.ipynb",
    ],
)
def test_sent(path):
    assert not leave_out(tuple(path.split("/")))
