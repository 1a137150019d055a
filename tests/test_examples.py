"""The optimizers of examples/ (written against the public API only) against Optax, with the kit."""

from __future__ import annotations

import inspect

import numpy as np
import optax
import pytest

from examples import lion, nadamw, schedule_free
from jaxopt_lab import plugins
from jaxopt_lab.optim import testing

LION = dict(b1=0.9, b2=0.99, weight_decay=0.1)
SF = dict(b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1, weight_lr_power=2.0)


@pytest.mark.parametrize("lr", [1e-3, 3e-2])
def test_lion_matches_optax_over_200_steps(lr):
  testing.check_against_reference(lion.lion(lr, **LION), optax.lion(lr, **LION), steps=200)


@pytest.mark.parametrize("lr", [1e-3, 3e-2])
def test_schedule_free_adamw_matches_optax_over_200_steps(lr):
  testing.check_against_reference(schedule_free.schedule_free_adamw(lr, **SF),
                                  optax.contrib.schedule_free_adamw(lr, **SF), steps=200)


@pytest.mark.parametrize("make_opt", [lion.lion, schedule_free.schedule_free_adamw],
                         ids=["lion", "schedule_free_adamw"])
def test_the_kit_passes(make_opt):
  testing.check_vmap_equals_separate_runs(
      make_opt, {"learning_rate": [1e-3, 3e-2], "b1": [0.9, 0.5], "b2": [0.99, 0.9],
                 "weight_decay": [0.0, 0.1]}, steps=20)
  testing.check_jit_equals_eager(make_opt(1e-2))
  testing.check_no_recompile(make_opt, {"learning_rate": 1e-3, "b1": 0.9},
                             {"learning_rate": 1e-2, "b1": 0.5})
  # Schedule-free recomputes y from x and z: it rounds even at rate 0 (within the derived bound).
  rtol = None if make_opt is schedule_free.schedule_free_adamw else 0.0
  testing.check_zero_learning_rate_is_identity(make_opt(0.0), rtol=rtol)
  testing.check_state_dtypes_stable(make_opt(1e-3))
  testing.check_descends_on_quadratic(make_opt(3e-2, weight_decay=0.0), steps=300)


# NAdamW as a paper's code writes it (examples/nadamw.py): its math checked by the kit without a
# reference implementation, and three plausible bugs planted in a copy of the file caught.
NADAM_HAT = "m_hat = b1 * m / (1 - b1 ** (count + 1)) + (1 - b1) * g / (1 - b1 ** count)"
V_HAT = "v_hat = v / (1 - b2 ** count)"
PLANTED = {
    "no_bias_correction": {NADAM_HAT: "m_hat = b1 * m + (1 - b1) * g", V_HAT: "v_hat = v"},
    "first_moment_corrected_with_b2": {
        NADAM_HAT: "m_hat = b1 * m / (1 - b2 ** (count + 1)) + (1 - b1) * g / (1 - b2 ** count)"},
    "no_nesterov": {NADAM_HAT: "m_hat = m / (1 - b1 ** count)"},
}


def _nadamw_closed_form(lr, b1):
  """A constant gradient g: m_t = (1 - b1^t) g and v_hat = g^2 exactly, so the update is
  -lr (b1 (1 - b1^t) / (1 - b1^(t+1)) + (1 - b1) / (1 - b1^t)) g / (|g| + eps), eps -> 0."""
  def expected(t, g):
    return -lr * (b1 * (1 - b1**t) / (1 - b1 ** (t + 1)) + (1 - b1) / (1 - b1**t)) * np.sign(g)
  return expected


def _check_nadamw_math(make):
  """The kit's checks that need no reference, as a user runs them on their NAdamW."""
  testing.check_constant_gradient_updates(make(1e-2, b1=0.9, eps=0.0, weight_decay=0.0),
                                          _nadamw_closed_form(1e-2, 0.9))
  testing.check_scale_invariance(make(1e-2, eps=1e-12, weight_decay=0.0))
  testing.check_float32_matches_float64(make(1e-2, weight_decay=0.1))


def test_nadamw_passes_the_kit_and_matches_optax():
  _check_nadamw_math(nadamw.nadamw)
  testing.check_vmap_equals_separate_runs(
      nadamw.nadamw, {"learning_rate": [1e-3, 3e-2], "b1": [0.9, 0.5], "weight_decay": [0.0, 0.1]},
      steps=20)
  # The researcher's failing case: against optax.nadamw for 200 steps in float32.
  testing.check_against_reference(nadamw.nadamw(1e-2, weight_decay=0.1),
                                  optax.nadamw(1e-2, weight_decay=0.1), steps=200)


@pytest.mark.parametrize("bug", list(PLANTED))
def test_a_planted_bug_in_nadamw_is_caught_without_a_reference(bug, tmp_path):
  source = inspect.getsource(nadamw)
  for old, new in PLANTED[bug].items():
    assert source.count(old) == 1, old  # the planted line is in the example
    source = source.replace(old, new)
  (tmp_path / "buggy_nadamw.py").write_text(source)
  buggy = plugins.load(str(tmp_path / "buggy_nadamw.py:nadamw"), "test")
  with pytest.raises(testing.OptimizerCheckError, match=r"check_constant_gradient_updates: step 1"):
    _check_nadamw_math(buggy)
