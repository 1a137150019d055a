"""The figures show the answer: informative y range, best lr and cap marked, declared scales,
one line for a one-factor sweep, and a two-factor view of multi-factor designs."""

import json
import os

import fixtures_expdir as fx
import numpy as np

from jaxopt_lab.analysis import findings, plots, results


def _findings(workdir):
  return findings.analyse(results.load_experiment(workdir), num_resamples=50)


def test_y_range_spans_best_to_cap():
  lo, hi = plots.y_range(np.array([0.5, 0.6, 5.9, np.nan]), 0.8, "min")
  span = 0.8 - 0.5
  np.testing.assert_allclose([lo, hi], [0.5 - plots.PAD * span, 0.8 + plots.PAD * span])
  lo, hi = plots.y_range(np.array([0.9, 0.7]), 0.1, "max")  # accuracy: the cap is below
  np.testing.assert_allclose([lo, hi], [0.1 - plots.PAD * 0.8, 0.9 + plots.PAD * 0.8])
  assert plots.y_range(np.array([np.nan]), 1.0, "min") is None


def test_sensitivity_figure_marks_best_cap_and_offscale_points(tmp_path):
  # sgd at lr 1e-4 ends above the initial loss and at lr 0.1 diverges (frozen at 4.0).
  fx.write_expdir(tmp_path)
  f = _findings(tmp_path)
  fig = plots.lr_sensitivity(f)
  full, zoom = fig.axes[:2]
  top = full.get_ylim()[1]
  assert top < fx.FROZEN_LOSS and abs(top - fx.INIT_LOSS) < 0.1 * fx.INIT_LOSS  # clipped at cap
  assert any(np.allclose(line.get_ydata(), fx.INIT_LOSS) and line.get_linestyle() == "--"
             for line in full.get_lines())  # the cap line
  for s in f.sensitivities:
    stars = [line for line in full.get_lines() if line.get_marker() == "*"
             and np.isclose(line.get_xdata()[0], s.best_lr)]
    assert stars and np.isclose(stars[0].get_ydata()[0], s.best_mean)
  # The zoom cuts the curve's far ends: they are drawn as triangles on the top edge.
  edge = [line for line in zoom.get_lines() if line.get_marker() == "^"]
  assert edge and all(np.allclose(line.get_ydata(), zoom.get_ylim()[1]) for line in edge)
  assert full.get_xscale() == "log"


def test_one_factor_sweep_has_no_effects_figure(tmp_path):
  fx.write_expdir(tmp_path, optimizers=("adam",))
  f = _findings(tmp_path)
  assert plots.effects(f) is None and plots.two_factor(f) is None


def _declare(workdir, scales):
  path = os.path.join(workdir, "config.json")
  with open(path, encoding="utf-8") as fh:
    config = json.load(fh)
  for name, scale in scales.items():
    config["sweep"]["factors"][name] = {"scale": scale, "low": 1.0, "high": 2.0}
  with open(path, "w", encoding="utf-8") as fh:
    json.dump(config, fh)


def test_axes_follow_declared_scales_and_two_factor_view(tmp_path):
  rng = np.random.default_rng(0)
  configs = [{"learning_rate": float(10 ** rng.uniform(-4, -1)),
              "warmup": float(10 ** rng.uniform(0, 3)), "eps": float(10 ** rng.uniform(-8, -6))}
             for _ in range(40)]
  fx.write_expdir(tmp_path, optimizers=("adam",), design="sobol", configs=configs,
                  effects={"warmup": 0.0003}, replicates=2, diverge=())
  _declare(tmp_path, {"learning_rate": "log", "warmup": "linear", "eps": "log"})
  f = _findings(tmp_path)
  fig = plots.effects(f)
  scales = {ax.get_xlabel(): ax.get_xscale() for ax in fig.axes}
  # warmup spans three decades but is declared linear; eps is declared log.
  assert scales == {"learning_rate": "log", "warmup": "linear", "eps": "log"}
  assert findings.second_factor(f.effects[0]) == "warmup"  # it has the larger effect
  view = plots.two_factor(f)
  ax = view.axes[0]
  assert (ax.get_xlabel(), ax.get_xscale(), ax.get_ylabel(), ax.get_yscale()) == (
      "learning_rate".replace("_", " "), "log", "warmup", "linear")
  assert ax.collections  # the scatter and the surface
  png = plots.png(view)
  assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_smooth_surface_is_a_kernel_weighted_mean():
  rng = np.random.default_rng(1)
  x, y, z = rng.uniform(size=30), rng.uniform(size=30), rng.normal(size=30)
  gx, gy = np.meshgrid(np.linspace(0, 1, 4), np.linspace(0, 1, 3))
  got = plots.smooth_surface(x, y, z, gx, gy, bandwidth=0.2)
  for i in range(3):
    for j in range(4):
      w = np.exp(-((gx[i, j] - x) ** 2 + (gy[i, j] - y) ** 2) / (2 * 0.2**2))
      np.testing.assert_allclose(got[i, j], np.sum(w * z) / np.sum(w))
  np.testing.assert_allclose(plots.smooth_surface(x, y, np.full(30, 2.5), gx, gy), 2.5)
