import optax

from examples.sign_momentum import sign_momentum
from jaxopt_lab.optim import testing


def test_sign_momentum():  # the README's "Bring your own optimizer" test, as a user writes it
  reference = optax.chain(optax.ema(0.9, debias=False), optax.scale_by_sign(), optax.sgd(1e-2))
  testing.check_against_reference(sign_momentum(1e-2, beta=0.9), reference, steps=200)
  grid = {"learning_rate": [1e-3, 1e-2], "beta": [0.9, 0.5]}
  testing.check_vmap_equals_separate_runs(sign_momentum, grid)
  testing.check_no_recompile(sign_momentum, {"learning_rate": 1e-2, "beta": 0.9},
                             {"learning_rate": 1e-3, "beta": 0.5})
  testing.check_descends_on_quadratic(sign_momentum(1e-2))
