"""`trainer train`: one DDP training session (command -> run -> session -> loop), its recipes
(pure batch arithmetic and LR schedules), precision policy, checkpoints, metrics and the
torch.distributed set-up."""
