"""Measurement sources behind one small Protocol (see base.py); select.py picks them."""

from power_daemon.backends.base import Backend

__all__ = ["Backend"]
