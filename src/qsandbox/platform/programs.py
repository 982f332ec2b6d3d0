"""The three Runtime programs, run for real on a device's noisy Aer simulator.

Inputs are decoded the way the service decodes them (``RuntimeDecoder`` for ``sampler`` and
``estimator``; the ibm-quantum-schemas params model for ``executor``) and results are encoded
the way the client decodes them (``RuntimeEncoder`` / the executor result model), so the
client's own decoders see the same shapes as from a real device.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
from ibm_quantum_schemas.common import CompressedTensorModel
from ibm_quantum_schemas.executor.version_2_0 import (
    ChunkPart,
    ChunkSpan,
    ItemMetadataModel,
    MetadataModel,
    QuantumProgramResultItemModel,
    QuantumProgramResultModel,
)
from qiskit.primitives import BackendEstimatorV2, PrimitiveResult, PubResult, SamplerPubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit_aer.primitives import SamplerV2 as AerSampler
from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder
from qiskit_ibm_runtime.execution_span import DoubleSliceSpan, ExecutionSpans
from qiskit_ibm_runtime.fake_provider.executor.run_quantum_program import run_quantum_program
from qiskit_ibm_runtime.options_models.simulator import SimulatorOptions
from qiskit_ibm_runtime.quantum_program.converters.converters_2_0 import passthrough_data_to_2_0
from qiskit_ibm_runtime.quantum_program.params_converters import (
    QUANTUM_PROGRAM_PARAMS_CONVERTERS,
)

from .backends import Device

PROGRAMS = ("sampler", "estimator", "executor")

DEFAULT_SHOTS = 4096
DEFAULT_PRECISION = 0.015625


class ProgramError(Exception):
    """Bad job input: the job fails with this message as its reason."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _seed(options: dict[str, Any]) -> int | None:
    return (options.get("simulator") or {}).get("seed_simulator")


def run_sampler(params: dict[str, Any], device: Device) -> str:
    options = params.get("options") or {}
    shots = options.get("default_shots") or DEFAULT_SHOTS
    try:
        pubs = [SamplerPub.coerce(tuple(p) if isinstance(p, list) else p, shots) for p in params["pubs"]]
    except (KeyError, TypeError, ValueError) as ex:
        raise ProgramError(f"Invalid sampler input: {ex}") from ex
    start = _now()
    sampler = AerSampler.from_backend(device.simulator(), seed=_seed(options))
    raw = sampler.run(pubs).result()
    stop = _now()
    results = [
        SamplerPubResult(res.data, metadata={"circuit_metadata": pub.circuit.metadata})
        for pub, res in zip(pubs, raw, strict=True)
    ]
    # Shape must be pub.shape + (shots,): the client's span masks index the data with it.
    span = DoubleSliceSpan(
        start,
        stop,
        {
            i: (pub.shape + (pub.shots,), slice(0, math.prod(pub.shape)), slice(0, pub.shots))
            for i, pub in enumerate(pubs)
        },
    )
    metadata = {"execution": {"execution_spans": ExecutionSpans([span])}, "version": 2}
    return json.dumps(PrimitiveResult(results, metadata=metadata), cls=RuntimeEncoder)


def run_estimator(params: dict[str, Any], device: Device) -> str:
    options = params.get("options") or {}
    precision = options.get("default_precision") or DEFAULT_PRECISION
    try:
        pubs = [EstimatorPub.coerce(tuple(p) if isinstance(p, list) else p, precision) for p in params["pubs"]]
    except (KeyError, TypeError, ValueError) as ex:
        raise ProgramError(f"Invalid estimator input: {ex}") from ex
    estimator = BackendEstimatorV2(
        backend=device.simulator(),
        options={"default_precision": precision, "seed_simulator": _seed(options)},
    )
    raw = estimator.run(pubs).result()
    results = []
    for res in raw:
        data = res.data
        fields = {"evs": data.evs, "stds": data.stds, "ensemble_standard_error": data.stds}
        results.append(PubResult(type(data)(**fields, shape=data.shape), metadata=res.metadata))
    return json.dumps(PrimitiveResult(results, metadata={"version": 2}), cls=RuntimeEncoder)


def run_executor(params: dict[str, Any], device: Device) -> str:
    version = params.get("schema_version")
    converter = QUANTUM_PROGRAM_PARAMS_CONVERTERS.get(version)
    if converter is None:
        raise ProgramError(f"Unsupported executor schema version {version!r}.")
    try:
        program, _ = converter.decoder(converter.model.model_validate(params))
    except ValueError as ex:
        raise ProgramError(f"Invalid executor input: {ex}") from ex
    start = _now()
    result = run_quantum_program(device.simulator(), program, SimulatorOptions())
    stop = _now()
    parts = []
    for idx, item in enumerate(program.items):
        size = math.prod(item.shape)
        parts.append(
            ChunkPart(idx_item=idx, size=size, permutation=list(range(len(item.shape))), element_range=(0, size, 1))
        )
    model = QuantumProgramResultModel(
        data=[
            QuantumProgramResultItemModel(
                results={k: CompressedTensorModel.from_numpy(np.asarray(v)) for k, v in item.items()},
                metadata=ItemMetadataModel(),
            )
            for item in result
        ],
        metadata=MetadataModel(chunk_timing=[ChunkSpan(start=start, stop=stop, parts=parts)]),
        passthrough_data=passthrough_data_to_2_0(program.passthrough_data),
        semantic_role=program._semantic_role,
    )
    return model.model_dump_json()


def run_program(program_id: str, body: str, device: Device) -> str:
    """Run one job (``body`` is the raw ``POST /jobs`` JSON) and return its results JSON.

    The caller holds ``device.lock``.
    """
    payload = json.loads(body, cls=RuntimeDecoder if program_id != "executor" else None)
    params = payload.get("params") or {}
    runner = {"sampler": run_sampler, "estimator": run_estimator, "executor": run_executor}
    return runner[program_id](params, device)
