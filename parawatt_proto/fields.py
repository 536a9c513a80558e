"""Field lists and enum names of the contract, written once for every side that maps messages.

parawatt_proto/convert.py encodes readings with READING_FIELDS, names the enums with these maps
and keeps its hand-written reading decoder (the collector's hot path) in step with
READING_FIELDS; tests/test_contract_fields.py checks all of them against the generated
descriptors.
"""

from __future__ import annotations

from parawatt_proto import parawatt_pb2 as pb

# Reading's optional numeric fields, in proto field order; unset means "not reported" (None).
READING_FIELDS = (
    "power_w",
    "power_avg_w",
    "energy_j",
    "gpu_util_pct",
    "mem_util_pct",
    "memory_used_bytes",
    "temperature_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
)
DEVICE_KIND_NAMES = {
    pb.DEVICE_KIND_GPU: "gpu",
    pb.DEVICE_KIND_CPU_PACKAGE: "cpu",
    pb.DEVICE_KIND_DRAM: "dram",
}
MARKER_KIND_NAMES = {
    pb.RUN_START: "run_start",
    pb.RUN_END: "run_end",
    pb.EPOCH_START: "epoch_start",
    pb.EPOCH_END: "epoch_end",
    pb.STEP_START: "step_start",
    pb.STEP_END: "step_end",
}
MARKER_KIND_OF = {name: kind for kind, name in MARKER_KIND_NAMES.items()}
RUN_STATUS_NAMES = {
    pb.RUN_STATUS_COMPLETED: "completed",
    pb.RUN_STATUS_FAILED: "failed",
    pb.RUN_STATUS_INTERRUPTED: "interrupted",
}
