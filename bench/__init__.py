"""Rheostat's benchmarks: sample efficiency, the LR range test's payoff, overhead.

Run them with ``python -m bench.run --full`` (rewrites ``bench/results/``) or
``--smoke`` (a tiny version of every section into a temporary folder). Every
number in ``bench/results/`` and in the results block of ``bench/README.md`` is
written by these modules; none is typed in by hand.
"""
