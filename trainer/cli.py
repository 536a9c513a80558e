"""`trainer train ...`: DDP training of ResNet50 / FourCastNet with energy boundary markers.

Run it as `torchrun --nproc-per-node N -m trainer train ...` (or plain `trainer train ...` for
one process). Flags are checked before torch is imported; a user mistake gets one clear message
and exit code 2, never a traceback. Exit codes: 0 completed, 128+signal when interrupted (130
Ctrl-C, 143 SIGTERM), 1 failed.
"""

from __future__ import annotations

import click

from parawatt_proto.cli_args import Utf8Group


class _Group(Utf8Group):
    prog = "trainer"


@click.group(cls=_Group)
def main() -> None:
    """parawatt trainer: data-parallel training that marks every step for energy measurement."""


def _register_commands() -> None:
    """`train` (trainer/train/command.py) and, when present, `sweep` (trainer/sweep/command.py)."""
    from trainer.train.command import train

    main.add_command(train)
    try:
        from trainer.sweep.command import sweep
    except ModuleNotFoundError as exc:
        if exc.name not in ("trainer.sweep", "trainer.sweep.command"):
            raise
        return
    main.add_command(sweep)


_register_commands()
