"""The device-level Prometheus gauges that both the daemon's and the collector's /metrics expose.

One table, so a node scraped directly and a node seen through a collector give the same series:
(metric name, help, Reading field, scale from the field's unit to the metric's base unit).
"""

DEVICE_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    ("parawatt_device_power_watts", "Instantaneous power (or the driver's average).", "power_w", 1),
    ("parawatt_device_power_average_watts", "Power averaged by the driver.", "power_avg_w", 1),
    ("parawatt_device_utilization_ratio", "Compute utilization (0-1).", "gpu_util_pct", 0.01),
    ("parawatt_device_memory_utilization_ratio", "Memory-bus utilization (0-1).", "mem_util_pct",
     0.01),
    ("parawatt_device_memory_used_bytes", "Device memory in use.", "memory_used_bytes", 1),
    ("parawatt_device_temperature_celsius", "Device temperature.", "temperature_c", 1),
    ("parawatt_device_sm_clock_hertz", "SM clock.", "sm_clock_mhz", 1e6),
    ("parawatt_device_memory_clock_hertz", "Memory clock.", "mem_clock_mhz", 1e6),
)  # fmt: skip
