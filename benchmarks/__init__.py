"""Benchmarks of ittc: speed is measured here and reported, never asserted in tests.

``python -m benchmarks.micro`` (in the source tree) or ``ittc bench micro`` (from an
installed ittc: the wheel ships this package) times the scheme's operations one by one;
``benchmarks/README.md`` lists the others. Reports go to ``benchmarks/results`` under the
current directory unless ``--out`` says otherwise.
"""

#: Marks this package as ittc's: ``ittc bench`` refuses a ``benchmarks`` module found first
#: on the path that is somebody else's.
ITTC_BENCHMARKS = True
