"""parawatt: measure the energy of any training loop, step by step, on every rank.

    import parawatt

    with parawatt.track(config={"model": "mynet", "global_batch_size": 256}) as run:
        for epoch in range(epochs):
            with run.epoch():
                for batch in loader:
                    loss = train_step(batch)
                    run.step(loss=loss)

    res = parawatt.results(run.id, db="sqlite:///parawatt.db", wait_s=30)

Base install: grpc and the contract package only; torch is used only when already imported.
Callbacks: `parawatt.integrations.lightning`, `parawatt.integrations.transformers`.
"""

from __future__ import annotations

from parawatt.results import Epoch as EpochEnergy
from parawatt.results import Results, ResultsError, Step, results
from parawatt.run import Epoch, Run, Terminated, track

__all__ = [
    "Epoch",
    "EpochEnergy",
    "Results",
    "ResultsError",
    "Run",
    "Step",
    "Terminated",
    "results",
    "track",
]
