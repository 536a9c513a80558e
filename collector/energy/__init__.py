"""Energy attribution, the collector's pure core: readings and marker bounds in, joules and
their uncertainty out (timeline.py is the entry; counter, power, model, interval, steps, types
are its parts).

Imports point inward only: the standard library and the other modules of this package. Nothing
here imports grpc, sqlalchemy, the generated contract code or another collector subpackage
(tests/test_layout.py checks it), so every rule is tested on synthetic series with known answers.
"""
