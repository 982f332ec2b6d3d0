"""How many shots the emulated estimator runs, as the service chooses them (``TwirlingOptions``)."""

from __future__ import annotations

import math

import pytest

from qsandbox.platform.programs import estimator_shots, precision_for


@pytest.mark.parametrize(
    ("options", "precision", "explicit", "expected"),
    [
        # level 0: no twirling, default_shots overrides default_precision
        ({"resilience_level": 0, "default_shots": 400}, 0.05, False, (400, None)),
        ({"resilience_level": 0}, 0.05, False, (400, None)),
        # a pub's own precision is obeyed over default_shots
        ({"resilience_level": 0, "default_shots": 1000}, 0.1, True, (100, None)),
        # level 1 (the default) twirls measurements: auto/auto gives max(64, ceil(s/32)) per randomization
        ({}, 0.015625, False, (4096, 32)),
        ({"default_shots": 400}, 0.05, False, (448, 7)),
        # both given: their product wins over default_shots (the client suite's 16 x 100 = 1600)
        (
            {
                "default_shots": 400,
                "twirling": {"enable_gates": True, "num_randomizations": 16, "shots_per_randomization": 100},
            },
            0.05,
            False,
            (1600, 16),
        ),
        # one given: the other is derived from the shots
        ({"default_shots": 400, "twirling": {"num_randomizations": 16}}, 0.05, False, (400, 16)),
        ({"default_shots": 400, "twirling": {"shots_per_randomization": 100}}, 0.05, False, (400, 4)),
        # twirling switched off explicitly at level 1
        ({"default_shots": 400, "twirling": {"enable_measure": False}}, 0.05, False, (400, None)),
        # PEC: 64 per randomization
        (
            {
                "resilience_level": 0,
                "default_shots": 1000,
                "resilience": {"pec_mitigation": True},
                "twirling": {"enable_gates": True},
            },
            0.05,
            False,
            (1024, 16),
        ),
    ],
)
def test_estimator_shots(options, precision, explicit, expected):  # type: ignore[no-untyped-def]
    assert estimator_shots(options, precision, explicit) == expected


@pytest.mark.parametrize("shots", [1, 3, 400, 448, 1600, 4096, 10007, 123457])
def test_precision_for_gives_exactly_the_shots(shots):  # type: ignore[no-untyped-def]
    assert math.ceil(1 / precision_for(shots) ** 2) == shots
