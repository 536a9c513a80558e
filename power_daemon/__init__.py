"""parawatt power daemon: samples GPU (and CPU/DRAM) power on one node and serves it over gRPC.

Imports: the contract package only (parawatt_proto: its messages, and convert/records for the
one mapping between them and plain records, shared with the collector). Its own plain types
(model.py) are what the backends produce; serve/codec.py frames what the contract encodes.
"""

__version__ = "0.1.0"
