"""`trainer sweep`: a scaling-study grid file in (grid, series), its points run locally one
torchrun each (runner, state, cooldown) or as SLURM scripts (slurm); command is the click side."""
