"""The emulated devices: fake backends from ``qiskit_ibm_runtime.fake_provider``.

Configuration and properties are served from the fake backends' own snapshot JSON (the same
data the client would get from a real device), renamed to the fake backend's name. The noisy Aer
simulator of each device is built once, lazily, because building it costs up to seconds.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import threading
from typing import Any

from qiskit_aer import AerSimulator
from qiskit_ibm_runtime import fake_provider

BACKEND_VERSION = "1.0.0"


class Device:
    """One emulated QPU; ``lock`` serialises its jobs like a real device's queue."""

    def __init__(self, class_name: str) -> None:
        cls = getattr(fake_provider, class_name, None)
        if cls is None:
            raise ValueError(f"unknown fake backend {class_name!r}")
        self.fake = cls()
        self.name: str = self.fake.name
        self.lock = threading.Lock()
        self._simulator: AerSimulator | None = None
        self._configuration = self._load(self.fake.conf_filename)
        self._properties = self._load(self.fake.props_filename)

    def _load(self, filename: str) -> dict[str, Any]:
        with open(os.path.join(self.fake.dirname, filename), encoding="utf-8") as fh:
            data = json.load(fh)
        data["backend_name"] = self.name
        data["backend_version"] = BACKEND_VERSION
        return data

    @property
    def num_qubits(self) -> int:
        return int(self._configuration["n_qubits"])

    def simulator(self) -> AerSimulator:
        """Noisy simulator of this device (call with ``lock`` held)."""
        if self._simulator is None:
            self._simulator = AerSimulator.from_backend(self.fake)
        return self._simulator

    def configuration(self) -> dict[str, Any]:
        conf = copy.deepcopy(self._configuration)
        # The client silently hides a backend whose online_date it cannot parse.
        conf.setdefault("online_date", "2021-01-01T00:00:00Z")
        return conf

    def properties(self) -> dict[str, Any]:
        return copy.deepcopy(self._properties)

    def summary(self, queue_length: int) -> dict[str, Any]:
        """Entry of ``GET /backends``."""
        conf = self._configuration
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
            "class": "device",
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
    """All devices by name, in configuration order."""

    def __init__(self, class_names: tuple[str, ...]) -> None:
        self._by_name: dict[str, Device] = {}
        for class_name in class_names:
            device = Device(class_name)
            self._by_name[device.name] = device

    def get(self, name: str) -> Device | None:
        return self._by_name.get(name)

    def __iter__(self):
        return iter(self._by_name.values())

    def warm_up(self) -> None:
        """Build every device's simulator ahead of the first job (up to seconds each)."""
        for device in self:
            with device.lock:
                device.simulator()
