"""Runner scripts: each runs one system in its own process (and its own venv for the peers).

They are executed by path (``<venv>/bin/python benchmarks/runners/run_<system>.py JOB.json OUT.json``),
so they import nothing from ``benchmarks``; ``_common`` sits next to them and is found through
``sys.path[0]``. Protocol: see :mod:`benchmarks.runners._common`.
"""
