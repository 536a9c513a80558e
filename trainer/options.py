"""Click parameter types shared by `trainer train` and `trainer sweep`."""

from __future__ import annotations

import math

import click


class FiniteFloat(click.FloatRange):
    """A float option within an optional range that is also a real number: click's FLOAT and
    FloatRange take "nan" (it compares false to every bound) and "inf", and either would only
    fail deep inside the run (a traceback from the optimizer) or, worse, train on garbage."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


FINITE = FiniteFloat()
