"""parawatt trainer: DDP training of ResNet50 and FourCastNet (AFNO) that marks every run, epoch
and optimizer-step boundary to the node's power daemon."""

__version__ = "0.1.0"
