"""`trainer train ...`: DDP training of ResNet50 / FourCastNet with energy boundary markers.

Run it as `torchrun --nproc-per-node N -m trainer train ...` (or plain `trainer train ...` for
one process). Flags are checked before torch is imported; a user mistake gets one clear message
and exit code 2, never a traceback. Exit codes: 0 completed, 128+signal when interrupted (130
Ctrl-C, 143 SIGTERM), 1 failed.
"""

from __future__ import annotations

import os
import sys

import click


class _Group(click.Group):
    def main(self, args=None, *rest, **kwargs):
        _utf8_args("trainer", args)
        return super().main(args, *rest, **kwargs)


def _utf8_args(prog: str, args) -> None:
    """A non-UTF-8 argument (Python keeps its bytes as surrogates) gets one line, not a
    traceback from deep inside whatever first encodes it."""
    for i, arg in enumerate(sys.argv[1:] if args is None else args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            click.echo(f"{prog}: error: argument {i} is not valid UTF-8: {os.fsencode(arg)!r}",
                       err=True)  # fmt: skip
            sys.exit(2)


@click.group(cls=_Group)
def main() -> None:
    """parawatt trainer: data-parallel training that marks every step for energy measurement."""


def _register_commands() -> None:
    """`train` (trainer/train_command.py) and, when present, `sweep` (trainer/sweep.py)."""
    from trainer.train_command import train

    main.add_command(train)
    try:
        from trainer.sweep import sweep
    except ModuleNotFoundError as exc:
        if exc.name != "trainer.sweep":
            raise
        return
    main.add_command(sweep)


_register_commands()
