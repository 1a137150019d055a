"""A group that ignores a setting another group uses is named: console and report."""

import logging
import math

from small_configs import classic_sweep_config

from jaxopt_lab import fairness
from jaxopt_lab.analysis import report
from jaxopt_lab.sweep import driver


def test_unfair_names_the_group_and_the_setting():
  groups = {"optimizer=adamw": {"learning_rate": [0.1], "weight_decay": [0.1], "clip_norm": [0.0]},
            "optimizer=optax:nadam": {"learning_rate": [0.1], "clip_norm": [0.0]},
            "optimizer=sgd": {"learning_rate": [0.1], "weight_decay": [math.nan],
                              "clip_norm": [0.0]}}
  assert fairness.unfair(groups) == [
      f"group {g} ignores weight_decay (group optimizer=adamw trains with 0.1): its optimizer "
      "has no weight_decay, so the comparison is not like for like"
      for g in ("optimizer=optax:nadam", "optimizer=sgd")]
  # Off everywhere (0) or set in every group: fair.
  assert fairness.unfair({"a": {"weight_decay": [0.0]}, "b": {}}) == []
  assert fairness.unfair({"a": {"weight_decay": [0.1]}, "b": {"weight_decay": [0.0]}}) == []


def test_a_sweep_and_its_report_name_the_group_without_weight_decay(tmp_path, caplog):
  config = classic_sweep_config(optimizers=("adamw", "optax:nadam"), learning_rates=(0.1,),
                                replicates=1, steps=10)
  config.optimizer.weight_decay = 0.1
  with caplog.at_level(logging.WARNING):
    driver.run_sweep(config, str(tmp_path))
  line = ("group optimizer=optax:nadam ignores weight_decay (group optimizer=adamw trains with "
          "0.1): its optimizer has no weight_decay, so the comparison is not like for like")
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
      f"Fair comparison: {line}."]
  text = open(report.write_report(str(tmp_path))).read()
  section = text[text.index("## Fair comparison"):]
  assert f"Not like for like: {line}." in section[:section.index("\n## ", 3)]
