"""Analysis of an experiment directory: statistics, figures and the report.

Reads only the files of an experiment directory (see `results.load_experiment`) and never
imports JAX. The entry point is `report.write_report(workdir)`.
"""
