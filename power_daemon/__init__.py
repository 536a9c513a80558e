"""parawatt power daemon: samples GPU (and CPU/DRAM) power on one node and serves it over gRPC."""

__version__ = "0.1.0"
