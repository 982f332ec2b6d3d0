"""Emulator settings from the environment."""

import hashlib

import pytest

from qsandbox.common import platform_constants as constants
from qsandbox.platform.config import PlatformConfig


def test_defaults_are_open_mode_with_three_backends():
    config = PlatformConfig.from_env({})
    assert config.open_mode
    assert config.instance_crn == constants.INSTANCE_CRN
    assert config.backends == constants.DEFAULT_BACKENDS
    assert config.token_ttl == constants.DEFAULT_TOKEN_TTL


def test_reads_digests_crn_backends_ttl():
    digest = hashlib.sha256(b"k").hexdigest()
    config = PlatformConfig.from_env(
        {
            "QSANDBOX_PLATFORM_KEY_SHA256": f" {digest.upper()} ,",
            "QSANDBOX_PLATFORM_INSTANCE_CRN": "crn:v1:bluemix:public:quantum-computing:eu-de:a/1:2::",
            "QSANDBOX_PLATFORM_BACKENDS": "FakeManilaV2",
            "QSANDBOX_PLATFORM_TOKEN_TTL": "120",
        }
    )
    assert config.key_sha256 == (digest,)
    assert not config.open_mode
    assert config.instance_crn.split(":")[5] == "eu-de"
    assert config.backends == ("FakeManilaV2",)
    assert config.token_ttl == 120


@pytest.mark.parametrize(
    "env",
    [
        {"QSANDBOX_PLATFORM_KEY_SHA256": "not-a-digest"},
        {"QSANDBOX_PLATFORM_TOKEN_TTL": "5"},
        {"QSANDBOX_PLATFORM_INSTANCE_CRN": "my-instance"},
    ],
)
def test_rejects_bad_settings(env):
    with pytest.raises(ValueError):
        PlatformConfig.from_env(env)
