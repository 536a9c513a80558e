from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_GPU: _ClassVar[DeviceKind]
    DEVICE_KIND_CPU_PACKAGE: _ClassVar[DeviceKind]
    DEVICE_KIND_DRAM: _ClassVar[DeviceKind]

class DeviceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_STATUS_OK: _ClassVar[DeviceStatus]
    DEVICE_STATUS_LOST: _ClassVar[DeviceStatus]

class MarkerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MARKER_KIND_UNSPECIFIED: _ClassVar[MarkerKind]
    RUN_START: _ClassVar[MarkerKind]
    RUN_END: _ClassVar[MarkerKind]
    EPOCH_START: _ClassVar[MarkerKind]
    EPOCH_END: _ClassVar[MarkerKind]
    STEP_START: _ClassVar[MarkerKind]
    STEP_END: _ClassVar[MarkerKind]

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_COMPLETED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_INTERRUPTED: _ClassVar[RunStatus]
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_GPU: DeviceKind
DEVICE_KIND_CPU_PACKAGE: DeviceKind
DEVICE_KIND_DRAM: DeviceKind
DEVICE_STATUS_OK: DeviceStatus
DEVICE_STATUS_LOST: DeviceStatus
MARKER_KIND_UNSPECIFIED: MarkerKind
RUN_START: MarkerKind
RUN_END: MarkerKind
EPOCH_START: MarkerKind
EPOCH_END: MarkerKind
STEP_START: MarkerKind
STEP_END: MarkerKind
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_COMPLETED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_INTERRUPTED: RunStatus

class DeviceInfo(_message.Message):
    __slots__ = ("index", "uuid", "name", "kind", "vendor_index", "power_limit_w", "memory_total_bytes", "has_energy_counter", "has_instant_power", "energy_counter_update_s", "energy_counter_resolution_j", "power_avg_window_s", "pci_bus_id", "power_scope", "partial_coverage", "sensor_method", "instant_power_lag_s")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VENDOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    HAS_ENERGY_COUNTER_FIELD_NUMBER: _ClassVar[int]
    HAS_INSTANT_POWER_FIELD_NUMBER: _ClassVar[int]
    ENERGY_COUNTER_UPDATE_S_FIELD_NUMBER: _ClassVar[int]
    ENERGY_COUNTER_RESOLUTION_J_FIELD_NUMBER: _ClassVar[int]
    POWER_AVG_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    POWER_SCOPE_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    SENSOR_METHOD_FIELD_NUMBER: _ClassVar[int]
    INSTANT_POWER_LAG_S_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    kind: DeviceKind
    vendor_index: int
    power_limit_w: float
    memory_total_bytes: float
    has_energy_counter: bool
    has_instant_power: bool
    energy_counter_update_s: float
    energy_counter_resolution_j: float
    power_avg_window_s: float
    pci_bus_id: str
    power_scope: str
    partial_coverage: bool
    sensor_method: str
    instant_power_lag_s: float
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[DeviceKind, str]] = ..., vendor_index: _Optional[int] = ..., power_limit_w: _Optional[float] = ..., memory_total_bytes: _Optional[float] = ..., has_energy_counter: _Optional[bool] = ..., has_instant_power: _Optional[bool] = ..., energy_counter_update_s: _Optional[float] = ..., energy_counter_resolution_j: _Optional[float] = ..., power_avg_window_s: _Optional[float] = ..., pci_bus_id: _Optional[str] = ..., power_scope: _Optional[str] = ..., partial_coverage: _Optional[bool] = ..., sensor_method: _Optional[str] = ..., instant_power_lag_s: _Optional[float] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("hostname", "boot_id", "backend", "driver_version", "daemon_version", "interval_ns", "first_seq", "next_seq", "capacity", "devices", "time_ns", "started_ns")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    DAEMON_VERSION_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_NS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    STARTED_NS_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    boot_id: str
    backend: str
    driver_version: str
    daemon_version: str
    interval_ns: int
    first_seq: int
    next_seq: int
    capacity: int
    devices: _containers.RepeatedCompositeFieldContainer[DeviceInfo]
    time_ns: int
    started_ns: int
    def __init__(self, hostname: _Optional[str] = ..., boot_id: _Optional[str] = ..., backend: _Optional[str] = ..., driver_version: _Optional[str] = ..., daemon_version: _Optional[str] = ..., interval_ns: _Optional[int] = ..., first_seq: _Optional[int] = ..., next_seq: _Optional[int] = ..., capacity: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[DeviceInfo, _Mapping]]] = ..., time_ns: _Optional[int] = ..., started_ns: _Optional[int] = ...) -> None: ...

class Reading(_message.Message):
    __slots__ = ("seq", "device", "time_ns", "status", "power_w", "power_avg_w", "energy_j", "gpu_util_pct", "mem_util_pct", "memory_used_bytes", "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "power_from_avg")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    POWER_AVG_W_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    GPU_UTIL_PCT_FIELD_NUMBER: _ClassVar[int]
    MEM_UTIL_PCT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MEM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    POWER_FROM_AVG_FIELD_NUMBER: _ClassVar[int]
    seq: int
    device: int
    time_ns: int
    status: DeviceStatus
    power_w: float
    power_avg_w: float
    energy_j: float
    gpu_util_pct: float
    mem_util_pct: float
    memory_used_bytes: float
    temperature_c: float
    sm_clock_mhz: float
    mem_clock_mhz: float
    power_from_avg: bool
    def __init__(self, seq: _Optional[int] = ..., device: _Optional[int] = ..., time_ns: _Optional[int] = ..., status: _Optional[_Union[DeviceStatus, str]] = ..., power_w: _Optional[float] = ..., power_avg_w: _Optional[float] = ..., energy_j: _Optional[float] = ..., gpu_util_pct: _Optional[float] = ..., mem_util_pct: _Optional[float] = ..., memory_used_bytes: _Optional[float] = ..., temperature_c: _Optional[float] = ..., sm_clock_mhz: _Optional[float] = ..., mem_clock_mhz: _Optional[float] = ..., power_from_avg: _Optional[bool] = ...) -> None: ...

class ReadingColumns(_message.Message):
    __slots__ = ("seq", "device", "time_ns", "status", "power_w", "power_avg_w", "energy_j", "gpu_util_pct", "mem_util_pct", "memory_used_bytes", "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "power_from_avg")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    POWER_AVG_W_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    GPU_UTIL_PCT_FIELD_NUMBER: _ClassVar[int]
    MEM_UTIL_PCT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MEM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    POWER_FROM_AVG_FIELD_NUMBER: _ClassVar[int]
    seq: _containers.RepeatedScalarFieldContainer[int]
    device: _containers.RepeatedScalarFieldContainer[int]
    time_ns: _containers.RepeatedScalarFieldContainer[int]
    status: _containers.RepeatedScalarFieldContainer[DeviceStatus]
    power_w: _containers.RepeatedScalarFieldContainer[float]
    power_avg_w: _containers.RepeatedScalarFieldContainer[float]
    energy_j: _containers.RepeatedScalarFieldContainer[float]
    gpu_util_pct: _containers.RepeatedScalarFieldContainer[float]
    mem_util_pct: _containers.RepeatedScalarFieldContainer[float]
    memory_used_bytes: _containers.RepeatedScalarFieldContainer[float]
    temperature_c: _containers.RepeatedScalarFieldContainer[float]
    sm_clock_mhz: _containers.RepeatedScalarFieldContainer[float]
    mem_clock_mhz: _containers.RepeatedScalarFieldContainer[float]
    power_from_avg: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, seq: _Optional[_Iterable[int]] = ..., device: _Optional[_Iterable[int]] = ..., time_ns: _Optional[_Iterable[int]] = ..., status: _Optional[_Iterable[_Union[DeviceStatus, str]]] = ..., power_w: _Optional[_Iterable[float]] = ..., power_avg_w: _Optional[_Iterable[float]] = ..., energy_j: _Optional[_Iterable[float]] = ..., gpu_util_pct: _Optional[_Iterable[float]] = ..., mem_util_pct: _Optional[_Iterable[float]] = ..., memory_used_bytes: _Optional[_Iterable[float]] = ..., temperature_c: _Optional[_Iterable[float]] = ..., sm_clock_mhz: _Optional[_Iterable[float]] = ..., mem_clock_mhz: _Optional[_Iterable[float]] = ..., power_from_avg: _Optional[_Iterable[bool]] = ...) -> None: ...

class RunConfig(_message.Message):
    __slots__ = ("world_size", "nodes", "local_rank", "local_world_size", "device_name", "device_uuid", "global_batch_size", "local_batch_size", "accumulation_steps", "model", "parameter_count", "dataset", "dataset_size", "epochs", "steps_per_epoch", "seed", "torch_version", "cuda_version", "driver_version", "hostname", "amp", "recipe", "tags", "backend")
    class RecipeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    LOCAL_WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_UUID_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_SIZE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TORCH_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    AMP_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    world_size: int
    nodes: int
    local_rank: int
    local_world_size: int
    device_name: str
    device_uuid: str
    global_batch_size: int
    local_batch_size: int
    accumulation_steps: int
    model: str
    parameter_count: int
    dataset: str
    dataset_size: int
    epochs: int
    steps_per_epoch: int
    seed: int
    torch_version: str
    cuda_version: str
    driver_version: str
    hostname: str
    amp: bool
    recipe: _containers.ScalarMap[str, str]
    tags: _containers.ScalarMap[str, str]
    backend: str
    def __init__(self, world_size: _Optional[int] = ..., nodes: _Optional[int] = ..., local_rank: _Optional[int] = ..., local_world_size: _Optional[int] = ..., device_name: _Optional[str] = ..., device_uuid: _Optional[str] = ..., global_batch_size: _Optional[int] = ..., local_batch_size: _Optional[int] = ..., accumulation_steps: _Optional[int] = ..., model: _Optional[str] = ..., parameter_count: _Optional[int] = ..., dataset: _Optional[str] = ..., dataset_size: _Optional[int] = ..., epochs: _Optional[int] = ..., steps_per_epoch: _Optional[int] = ..., seed: _Optional[int] = ..., torch_version: _Optional[str] = ..., cuda_version: _Optional[str] = ..., driver_version: _Optional[str] = ..., hostname: _Optional[str] = ..., amp: _Optional[bool] = ..., recipe: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Mapping[str, str]] = ..., backend: _Optional[str] = ...) -> None: ...

class Marker(_message.Message):
    __slots__ = ("seq", "run_id", "rank", "kind", "epoch", "step", "time_ns", "device_uuid", "local_rank", "metrics", "config", "status", "hostname", "run_token", "run_token_sha256", "device_slice")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_UUID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    RUN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RUN_TOKEN_SHA256_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SLICE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    run_id: str
    rank: int
    kind: MarkerKind
    epoch: int
    step: int
    time_ns: int
    device_uuid: str
    local_rank: int
    metrics: _containers.ScalarMap[str, float]
    config: RunConfig
    status: RunStatus
    hostname: str
    run_token: bytes
    run_token_sha256: bytes
    device_slice: str
    def __init__(self, seq: _Optional[int] = ..., run_id: _Optional[str] = ..., rank: _Optional[int] = ..., kind: _Optional[_Union[MarkerKind, str]] = ..., epoch: _Optional[int] = ..., step: _Optional[int] = ..., time_ns: _Optional[int] = ..., device_uuid: _Optional[str] = ..., local_rank: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., config: _Optional[_Union[RunConfig, _Mapping]] = ..., status: _Optional[_Union[RunStatus, str]] = ..., hostname: _Optional[str] = ..., run_token: _Optional[bytes] = ..., run_token_sha256: _Optional[bytes] = ..., device_slice: _Optional[str] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLatestRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LatestReadings(_message.Message):
    __slots__ = ("info", "readings")
    INFO_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    info: NodeInfo
    readings: _containers.RepeatedCompositeFieldContainer[Reading]
    def __init__(self, info: _Optional[_Union[NodeInfo, _Mapping]] = ..., readings: _Optional[_Iterable[_Union[Reading, _Mapping]]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("from_seq", "boot_id", "max_batch", "no_follow", "columnar")
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    NO_FOLLOW_FIELD_NUMBER: _ClassVar[int]
    COLUMNAR_FIELD_NUMBER: _ClassVar[int]
    from_seq: int
    boot_id: str
    max_batch: int
    no_follow: bool
    columnar: bool
    def __init__(self, from_seq: _Optional[int] = ..., boot_id: _Optional[str] = ..., max_batch: _Optional[int] = ..., no_follow: _Optional[bool] = ..., columnar: _Optional[bool] = ...) -> None: ...

class StreamBatch(_message.Message):
    __slots__ = ("boot_id", "first_seq", "next_seq", "readings", "markers", "missed", "info", "boot_changed", "columns")
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    MARKERS_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    BOOT_CHANGED_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    boot_id: str
    first_seq: int
    next_seq: int
    readings: _containers.RepeatedCompositeFieldContainer[Reading]
    markers: _containers.RepeatedCompositeFieldContainer[Marker]
    missed: int
    info: NodeInfo
    boot_changed: bool
    columns: ReadingColumns
    def __init__(self, boot_id: _Optional[str] = ..., first_seq: _Optional[int] = ..., next_seq: _Optional[int] = ..., readings: _Optional[_Iterable[_Union[Reading, _Mapping]]] = ..., markers: _Optional[_Iterable[_Union[Marker, _Mapping]]] = ..., missed: _Optional[int] = ..., info: _Optional[_Union[NodeInfo, _Mapping]] = ..., boot_changed: _Optional[bool] = ..., columns: _Optional[_Union[ReadingColumns, _Mapping]] = ...) -> None: ...

class MarkerBatch(_message.Message):
    __slots__ = ("markers",)
    MARKERS_FIELD_NUMBER: _ClassVar[int]
    markers: _containers.RepeatedCompositeFieldContainer[Marker]
    def __init__(self, markers: _Optional[_Iterable[_Union[Marker, _Mapping]]] = ...) -> None: ...

class MarkerAck(_message.Message):
    __slots__ = ("accepted", "next_seq", "rejected")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    next_seq: int
    rejected: int
    def __init__(self, accepted: _Optional[int] = ..., next_seq: _Optional[int] = ..., rejected: _Optional[int] = ...) -> None: ...
