"""The verdict of an experiment in plain sentences: what the report opens with and the console
ends with.

The best group is the one with the best mean validation metric (`findings.rank`); each other
group is compared with it on the test metric, paired over seeds. A sentence says "A beats B" only
when the paired t-test, Holm-corrected over every pair of groups, gives p < `ALPHA`; otherwise
it says the two are not distinguishable with the seeds run, and how many seeds would resolve a
difference of the observed size with power `POWER` (noncentral t at the observed mean and
standard deviation of the paired differences, level `ALPHA` / number of pairs: Holm's
strictest step, so the estimate holds whichever step the pair lands on).
"""

from __future__ import annotations

import dataclasses
import math

from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import stats

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 10_000


@dataclasses.dataclass(frozen=True)
class Verdict:
  headline: str  # the best group and its setting
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


def pair_sentence(p: fnd.Pair, *, mode: str, what: str, num_pairs: int) -> str:
  """The sentence for `p.b` (the best group) against `p.a`; differences are a - b.

  Args:
    p: the pair, `comparison` of a - b over the shared seeds, `p_holm` its corrected p.
    mode: "min" or "max" for the compared metric.
    what: the compared metric in words, e.g. "test loss".
    num_pairs: the number of pairs Holm's correction ran over.

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
  if p.p_holm < ALPHA:
    a_better = (c.mean_diff < 0) == (mode == "min")
    winner, loser = (a, b) if a_better else (b, a)
    direction = "lower" if (mode == "min") else "higher"
    return (f"{winner} beats {loser}: {what} {direction} by {_num(abs(c.mean_diff))} (95% CI of "
            f"the difference [{_num(c.ci_low)}, {_num(c.ci_high)}], Holm-corrected p = "
            f"{p.p_holm:.3g}, {_seeds(c.n)}).")
  needed = seeds_needed(c, num_pairs)
  base = f"{b} and {a} are not distinguishable with {_seeds(c.n)}; "
  if needed is None:
    return base + (f"more than {MAX_SEEDS} seeds would be needed to resolve a difference of "
                   f"this size (power {POWER}).")
  return base + f"about {needed} seeds would resolve a difference of this size (power {POWER})."


def seeds_needed(c: stats.PairedComparison, num_pairs: int) -> int | None:
  """The seeds a pair found not distinguishable would need: the power computation of the module
  docstring, and at least one more than it has; None beyond `MAX_SEEDS`.

  `c` must have n >= 2 and a finite sd_diff > 0.
  """
  needed = stats.seeds_for_power(c.mean_diff, c.sd_diff, power=POWER,
                                 alpha=ALPHA / max(num_pairs, 1), max_n=MAX_SEEDS)
  return None if needed is None else max(needed, c.n + 1)


def verdict(f: fnd.Findings) -> Verdict:
  """The headline (best group and setting) and one sentence per other group."""
  exp = f.experiment
  if not f.ranked or f.ranked[0].config < 0:
    return Verdict("No finished points yet: nothing to compare.", ())
  best = f.ranked[0]
  valid = f"mean valid {exp.metric} {_num(best.valid.value)} over {_seeds(best.valid.n)}"
  test = f"{exp.test_split} {exp.metric} {_num(best.test.value)}"
  if len(f.ranked) == 1:
    return Verdict(f"Best configuration of {best.group.label}: {setting_text(best)} "
                   f"({valid}; {test}).", ())
  headline = (f"Best by validation: {best.group.label} at {setting_text(best)} ({valid}; "
              f"{test}).")
  what = f"{exp.test_split} {exp.metric}"
  sentences = tuple(pair_sentence(p, mode=exp.mode, what=what, num_pairs=len(f.pairs))
                    for p in f.versus_best)
  return Verdict(headline, sentences)
