"""The verdict of an experiment in plain sentences: what the report opens with and the console
ends with.

Each group is tuned on the validation metric and compared on the test metric (`selection`):
the compared quantity is the tuned optimizer (the configuration best on valid, chosen on each
seed). A sentence says "A beats B" only when the paired t-test, Bonferroni-corrected over the m
pairs of groups, gives p < alpha (the experiment's level: `looks.alpha_at`, 0.04 for an
experiment that follows from none); the interval beside it is the simultaneous one at level
1 - alpha / m, so it excludes 0 exactly then. The headline says what is known: which groups are
distinguishable at the seeds run, then the best by validation (the recommended configuration).
Otherwise a sentence says the two are not distinguishable and gives the seeds that would
resolve the difference as a range (`stats.seeds_range`): the seeds the paired t-test at level
alpha / m needs for power `POWER`, over the `RANGE_LEVEL` interval of the effect size.
"""

from __future__ import annotations

import dataclasses
import math

from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import stats

POWER = 0.8
RANGE_LEVEL = 0.8  # coverage of the range of seeds needed
MAX_SEEDS = 10_000

__all__ = ["MAX_SEEDS", "POWER", "RANGE_LEVEL", "Verdict", "pair_sentence",
           "seeds_needed", "setting_text", "verdict"]


@dataclasses.dataclass(frozen=True)
class Verdict:
  headline: str  # what is known: distinguishable or not, and the best by validation
  sentences: tuple[str, ...]  # one per other group: beats / not distinguishable

  def lines(self) -> list[str]:
    return [self.headline, *self.sentences]


def _num(x: float) -> str:
  return format(x, ".4g")


def _seeds(n: int) -> str:
  return f"{n} seed" + ("" if n == 1 else "s")


def setting_text(sel: fnd.Selection) -> str:
  """The chosen configuration in words: "lr 0.01, b1=0.9"."""
  parts = [] if math.isnan(sel.lr) else [f"lr {sel.lr:.3g}"]
  for k, v in sel.settings.items():
    if k != "learning_rate":
      parts.append(f"{k}={_num(v) if isinstance(v, float) else v}")
  return ", ".join(parts) or "its only configuration"


def seeds_needed(p: fnd.Pair, alpha: float | None = None) -> tuple[int, int | None]:
  """The range of seeds a pair found not distinguishable would need (module docstring) at the
  family level `alpha` (default: the pair's own), each end at least one more than it has; the
  upper end None when unbounded or past `MAX_SEEDS`.

  `p.comparison` must have n >= 2 and a finite sd_diff > 0.
  """
  c = p.comparison
  low, high = stats.seeds_range(c.mean_diff, c.sd_diff, c.n, alpha=(alpha or p.alpha) / p.num_pairs,
                                power=POWER, level=RANGE_LEVEL, max_n=MAX_SEEDS)
  return max(low, c.n + 1), (None if high is None else max(high, c.n + 1))


def _range_text(p: fnd.Pair) -> str:
  low, high = seeds_needed(p)
  level = f"paired t-test at level {p.alpha:g}/{p.num_pairs}" if p.num_pairs > 1 else (
      f"paired t-test at level {p.alpha:g}")
  span = (f"at least {low} seeds (no upper bound: the effect may be 0)" if high is None
          else f"{low} to {high} seeds")
  return (f"resolving a difference of this size would take {span} ({RANGE_LEVEL:.0%} "
          f"confidence range over the effect size; {level}, power {POWER})")


def pair_sentence(p: fnd.Pair, *, mode: str, what: str) -> str:
  """The sentence for `p.b` (the best group) against `p.a`; differences are a - b.

  Args:
    p: the pair, `comparison` of a - b over the shared seeds at the family's level.
    mode: "min" or "max" for the compared metric.
    what: the compared metric in words, e.g. "test loss".

  Returns:
    One sentence.
  """
  a, b = p.a.group.label, p.b.group.label
  c = p.comparison
  if c is None:
    return f"{b} and {a} share no finished seed, so they cannot be compared."
  if c.n < 2:
    return (f"{b} and {a} are not distinguishable with {_seeds(c.n)}: an interval needs at "
            "least 2 seeds.")
  if not (math.isfinite(c.sd_diff) and c.sd_diff > 0):
    if c.mean_diff == 0:
      return (f"{b} and {a} are not distinguishable with {_seeds(c.n)}: {what} is equal on "
              "every seed.")
    return (f"{b} and {a} differ by the same {_num(abs(c.mean_diff))} in {what} on every one of "
            f"{_seeds(c.n)}, so there is no spread to test the difference against.")
  if p.distinguishable:
    a_better = (c.mean_diff < 0) == (mode == "min")
    winner, loser = (a, b) if a_better else (b, a)
    direction = "lower" if (mode == "min") else "higher"
    return (f"{winner} beats {loser}: {what} {direction} by {_num(abs(c.mean_diff))} "
            f"({p.level:.2%} simultaneous CI of the difference [{_num(c.ci_low)}, "
            f"{_num(c.ci_high)}], Bonferroni p = {p.p_adjusted:.3g}, {_seeds(c.n)}).")
  return (f"{b} and {a} are not distinguishable with {_seeds(c.n)} (Bonferroni p = "
          f"{p.p_adjusted:.3g}); " + _range_text(p) + ".")


def verdict(f: fnd.Findings) -> Verdict:
  """The headline (what is known) and one sentence per other group."""
  exp = f.experiment
  if not f.ranked or f.ranked[0].config < 0:
    return Verdict("No finished points yet: nothing to compare.", ())
  best = f.ranked[0]
  valid = f"mean valid {exp.metric} {_num(best.valid.value)} over {_seeds(best.valid.n)}"
  test = f"tuned {exp.test_split} {exp.metric} {_num(best.test.value)}"
  if len(f.ranked) == 1:
    return Verdict(f"Best configuration of {best.group.label}: {setting_text(best)} "
                   f"({valid}; {test}).", ())
  seeds = max((p.comparison.n for p in f.versus_best if p.comparison), default=0)
  beaten = [p for p in f.pairs if p.comparison and p.distinguishable]
  kind = "optimizer" if exp.structural_factors == ("optimizer",) else "group"
  at = f" (level {f.alpha:g}, look {f.look})" if f.look > 1 else ""
  if not beaten:
    known = f"No {kind} is distinguishable from another at {_seeds(seeds)}"
  elif len(f.pairs) == 1:
    known = f"The two {kind}s are distinguishable at {_seeds(seeds)}"
  else:
    known = (f"{len(beaten)} of the {len(f.pairs)} pairs of {kind}s are distinguishable at "
             f"{_seeds(seeds)}")
  headline = (f"{known}{at}; best by validation: {best.group.label} at {setting_text(best)} "
              f"({valid}; {test}).")
  what = f"tuned {exp.test_split} {exp.metric}"
  sentences = tuple(pair_sentence(p, mode=exp.mode, what=what) for p in f.versus_best)
  return Verdict(headline, sentences)
