"""The statistics of the report, in NumPy and SciPy: one namespace over the modules that hold
them (each small and named for what it holds).

* `intervals`: the interval of a mean over seeds, per metric kind (`mean_interval`: Student t
  for "general" metrics, Cox's lognormal interval for "positive" ones such as losses; the
  coverage each keeps at 3 to 30 seeds is in that module's docstring).
* `paired`: paired comparisons over common-random-number seeds (`paired_comparison`), and
  `bonferroni` with the `simultaneous_level` of the intervals that agree with it.
* `power`: power of the paired t-test, the seeds for a given effect, the interval of the effect
  size and the range of seeds a comparison needs (`seeds_range`).
* `best_of_k`: expected best value after k random draws, tuning curves.
* `anova`: ANOVA of categorical factors, first-order variance shares of continuous ones.
* `lr_stats`: Wortsman et al.'s learning-rate sensitivity and basins (`basin_width`).

Every function that can be told "min" or "max" treats the better value as the smaller or the
larger one; the others are mode-free.
"""

from jaxopt_lab.analysis.anova import (
  AnovaRow,
  VarianceShare,
  anova,
  quantile_bins,
  variance_decomposition,
)
from jaxopt_lab.analysis.best_of_k import MODES, TuningCurve, expected_best_of_k, tuning_curve
from jaxopt_lab.analysis.intervals import (
  METRIC_KINDS,
  interval_method,
  log_mean_interval,
  mean_interval,
  metric_kind,
  t_interval,
)
from jaxopt_lab.analysis.lr_stats import Basin, basin_width, lr_sensitivity
from jaxopt_lab.analysis.paired import (
  WILCOXON_MIN_PAIRS,
  PairedComparison,
  bonferroni,
  paired_comparison,
  simultaneous_level,
)
from jaxopt_lab.analysis.power import (
  effect_size_interval,
  paired_t_power,
  seeds_for_power,
  seeds_range,
)

__all__ = [
    "METRIC_KINDS", "MODES", "WILCOXON_MIN_PAIRS", "AnovaRow", "Basin", "PairedComparison",
    "TuningCurve", "VarianceShare", "anova", "basin_width", "bonferroni", "effect_size_interval",
    "expected_best_of_k", "interval_method", "log_mean_interval", "lr_sensitivity",
    "mean_interval", "metric_kind", "paired_comparison", "paired_t_power", "quantile_bins",
    "seeds_for_power", "seeds_range", "simultaneous_level", "t_interval", "tuning_curve",
    "variance_decomposition"]
