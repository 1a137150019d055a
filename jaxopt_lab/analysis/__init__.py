"""Analysis of an experiment directory: statistics, verdict, figures and the report.

Reads only the files of an experiment directory (see `results.load_experiment`) and never
imports JAX. The entry point is `report.write(workdir)` (its `console_lines()` are what the
scripts end with); `compare.write(workdirs, out)` compares several experiments.
"""
