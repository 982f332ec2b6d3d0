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


def test_extra_plans_make_instances_with_stable_ids():
    config = PlatformConfig.from_env({"QSANDBOX_PLATFORM_EXTRA_PLANS": "internal, premium"})
    first, internal, premium = config.instances
    assert first.crn == constants.INSTANCE_CRN and first.plan_name == constants.PLAN_NAME
    assert (internal.plan_name, internal.name) == ("internal", "qsandbox-internal")
    assert len({first.crn, internal.crn, premium.crn}) == 3 and len({first.plan_id, internal.plan_id}) == 2
    assert PlatformConfig.from_env({"QSANDBOX_PLATFORM_EXTRA_PLANS": "internal"}).instances[1] == internal
    assert config.instance(internal.guid) == internal and config.instance(internal.crn) == internal
    assert config.instance("crn:v1:other") is None


@pytest.mark.parametrize("plans", ["Internal", "open", "a b", "-x"])
def test_extra_plans_refuse_bad_names(plans):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="EXTRA_PLANS"):
        PlatformConfig.from_env({"QSANDBOX_PLATFORM_EXTRA_PLANS": plans})
