"""The optimizers of examples/ (written against the public API only) against Optax, with the kit."""

from __future__ import annotations

import optax
import pytest

from examples import lion, schedule_free
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
  # Schedule-free recomputes y from x and z: an ulp of rounding even at rate 0.
  rtol = 1e-6 if make_opt is schedule_free.schedule_free_adamw else 0.0
  testing.check_zero_learning_rate_is_identity(make_opt(0.0), rtol=rtol)
  testing.check_state_dtypes_stable(make_opt(1e-3))
  testing.check_descends_on_quadratic(make_opt(3e-2, weight_decay=0.0), steps=300)
