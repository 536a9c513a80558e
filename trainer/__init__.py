"""parawatt trainer: DDP training of ResNet50 and FourCastNet (AFNO) that marks every run, epoch
and optimizer-step boundary to the node's power daemon.

Imports: the client library (parawatt) and the contract package (parawatt_proto; a daemon's
answers are read through its one mapping, parawatt_proto.convert: the sweep's cool-down, the GPU
acceptance check); never the daemon or the collector.
"""

__version__ = "0.1.0"
