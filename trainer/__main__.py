"""`python -m trainer train ...` (and so `torchrun --nproc-per-node N -m trainer train ...`)."""

from trainer.cli import main

if __name__ == "__main__":
    main()
