"""Input rules that the three command-line tools share (a contract with the user's shell).

An argument that is not valid UTF-8 (Python keeps its bytes as lone surrogates) gets one line and
exit status 2, not a traceback from deep inside whatever first encodes it. A float option is a
finite number (FiniteFloat).
"""

from __future__ import annotations

import math
import os
import sys

import click


def check_utf8_args(prog: str, args=None) -> None:
    for i, arg in enumerate(sys.argv[1:] if args is None else args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            click.echo(f"{prog}: error: argument {i} is not valid UTF-8: {os.fsencode(arg)!r}",
                       err=True)  # fmt: skip
            sys.exit(2)


class Utf8Group(click.Group):
    """A click group that checks its arguments with `check_utf8_args`; set `prog` per tool."""

    prog = "parawatt"

    def main(self, args=None, *rest, **kwargs):
        check_utf8_args(self.prog, args)
        return super().main(args, *rest, **kwargs)


class FiniteFloat(click.FloatRange):
    """A float option that must be a finite number (within min..max when given). Click's
    ranges let nan through (every comparison with it is false), and nan or inf then failed far
    inside: `power-daemon serve --gil-switch-ms nan` aborted the interpreter, `--sim-counter-ms
    inf` raised OverflowError, `trainer train --lr nan` gave a traceback from the optimizer and
    `--lr inf` trained on garbage. Every float option of the three tools takes this type."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


FINITE = FiniteFloat()
