"""The emulated devices: fake backends from ``qiskit_ibm_runtime.fake_provider``.

Configuration and properties are served from the fake backends' own snapshot JSON (the same
data the client would get from a real device). A device is configured as ``ClassName`` (served
under the fake's own name, e.g. ``fake_manila``) or ``name=ClassName`` (served under ``name``:
``ibm_fez=FakeFez`` is IBM's Heron r2 device with its snapshot's basis gates, coupling map and
errors). Snapshots are read when first asked for, so that a fleet of 156-qubit devices costs
nothing at start-up; each job builds a noisy simulator of only the qubits it touches
(``simulation``).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from qiskit.transpiler import Target  # type: ignore[import-untyped]
from qiskit_ibm_runtime import fake_provider  # type: ignore[import-untyped]
from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2  # type: ignore[import-untyped]

BACKEND_VERSION = "1.0.0"


def parse_spec(spec: str) -> tuple[str | None, str]:
    """``"ibm_fez=FakeFez"`` -> ``("ibm_fez", "FakeFez")``; ``"FakeFez"`` -> ``(None, "FakeFez")``."""
    name, sep, class_name = spec.partition("=")
    return (name.strip(), class_name.strip()) if sep else (None, spec.strip())


class Device:
    """One emulated QPU; ``lock`` serialises its jobs like a real device's queue."""

    def __init__(self, spec: str, twin_of: Device | None = None) -> None:
        name, class_name = parse_spec(spec)
        cls = getattr(fake_provider, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, FakeBackendV2)):
            raise ValueError(f"unknown fake backend {class_name!r}")
        self.fake: FakeBackendV2 = twin_of.fake if twin_of else cls()  # cheap: snapshots are read on first use
        self.name: str = name or self.fake.name
        self.twin_of = twin_of
        """For a mock device (``mock_fez``, what ``dry_run=True`` runs on): the device it mirrors."""
        self.lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._configuration: dict[str, Any] | None = None
        self._properties: dict[str, Any] | None = None
        self._target: Target | None = None

    def _load(self, filename: str) -> dict[str, Any]:
        with open(os.path.join(self.fake.dirname, filename), encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
        data["backend_name"] = self.name
        data["backend_version"] = BACKEND_VERSION
        return data

    def _conf(self) -> dict[str, Any]:
        if self._configuration is None:
            with self._load_lock:
                if self._configuration is None:
                    self._configuration = self._load(self.fake.conf_filename)
        return self._configuration

    def _props(self) -> dict[str, Any]:
        if self._properties is None:
            with self._load_lock:
                if self._properties is None:
                    self._properties = self._load(self.fake.props_filename)
        return self._properties

    @property
    def num_qubits(self) -> int:
        return int(self._conf()["n_qubits"])

    @property
    def target(self) -> Target:
        """The device's transpiler target (errors, durations, T1/T2), built once."""
        if self.twin_of is not None:
            return self.twin_of.target  # the same noise, built once
        if self._target is None:
            with self._load_lock:
                if self._target is None:
                    self._target = self.fake.target
        return self._target

    @property
    def calibration_id(self) -> str:
        """Id of the one calibration the emulator serves (its snapshot's date, hashed)."""
        stamp = f"{self.name}:{self._props().get('last_update_date', '')}"
        return hashlib.sha256(stamp.encode()).hexdigest()[:24]

    def configuration(self) -> dict[str, Any]:
        conf = copy.deepcopy(self._conf())
        # The client silently hides a backend whose online_date it cannot parse.
        conf.setdefault("online_date", "2021-01-01T00:00:00Z")
        return conf

    def properties(self) -> dict[str, Any]:
        props = copy.deepcopy(self._props())
        props["calibration_id"] = self.calibration_id  # the id `service.backend(calibration_id=)` takes
        return props

    @property
    def is_mock(self) -> bool:
        return self.twin_of is not None

    def summary(self, queue_length: int) -> dict[str, Any]:
        """Entry of ``GET /backends``."""
        conf = self._conf()
        return {
            "name": self.name,
            "status": {"name": "online", "reason": "available"},
            "is_simulator": False,
            "qubits": self.num_qubits,
            "physical_qubits": self.num_qubits,
            "processor_type": conf.get("processor_type", {}),
            "queue_length": queue_length,
            "clops": {"type": "hardware", "value": 5000},
            "performance_metrics": {},
            "class": "mock" if self.is_mock else "device",
            "wait_time_seconds": {"average": 0, "maximum": 0},
        }

    def status(self, queue_length: int) -> dict[str, Any]:
        return {
            "state": True,
            "status": "active",
            "message": "available",
            "length_queue": queue_length,
            "backend_version": BACKEND_VERSION,
            "last_update": dt.datetime.now(dt.UTC).isoformat(),
        }


class Devices:
    """All devices by name, in configuration order.

    Each device named like IBM's (``ibm_fez``) has a mock twin (``mock_fez``), as IBM serves one
    for ``dry_run=True``: listed only when mocks are asked for, same snapshot and noise, and a
    queue of its own. Jobs on it run (everything here is simulated) and are listed only with
    ``include_mocks``.
    """

    def __init__(self, specs: tuple[str, ...]) -> None:
        self._by_name: dict[str, Device] = {}
        for spec in specs:
            device = Device(spec)
            if device.name in self._by_name:
                raise ValueError(f"backend {device.name!r} is configured twice")
            self._by_name[device.name] = device
        for device in list(self._by_name.values()):
            prefix, sep, rest = device.name.partition("_")
            if prefix == "ibm" and sep and f"mock_{rest}" not in self._by_name:
                twin = Device(f"mock_{rest}={type(device.fake).__name__}", twin_of=device)
                self._by_name[twin.name] = twin

    def listed(self, include_mocks: bool) -> list[Device]:
        return [d for d in self._by_name.values() if include_mocks or not d.is_mock]

    def get(self, name: str) -> Device | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._by_name.values())

    def warm_up(self) -> None:
        """Read every snapshot and build every target ahead of the first request, in order.

        Runs in a background thread after start-up; a request that comes first builds what it
        needs itself (under the device's load lock), so nothing waits for the whole fleet.
        """
        for device in self.listed(include_mocks=False):
            device.properties()
            _ = device.target
