"""statekit's benchmarks, side by side with the tools users would otherwise pick.

``python -m benchmarks`` (or ``make bench``) runs every workload for statekit
and its comparators in one run, prints a table and writes the same figures to
``benchmarks/results/latest.json``. ``--smoke`` runs the same code on tiny
sizes in a few seconds, to keep it working in CI; its figures mean nothing.

One module per workload; :mod:`benchmarks.timing` measures, and
:mod:`benchmarks.report` holds the results and renders them.
"""
