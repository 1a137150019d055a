"""Tests for jaxopt_lab.sweep.space and jaxopt_lab.sweep.design."""

from __future__ import annotations

import csv
import itertools
import math

import ml_collections
import numpy as np
import pytest
from scipy import stats
from scipy.stats import qmc

from jaxopt_lab.sweep import design as design_lib
from jaxopt_lab.sweep import factors as factors_lib
from jaxopt_lab.sweep.design import (
    Point,
    config_overrides,
    design_columns,
    groups,
    make_design,
    read_design_csv,
    write_design_csv,
)

LR = {"scale": "log", "low": 1e-4, "high": 1.0, "num": 5}
WARMUP = {"scale": "linear", "low": 0.0, "high": 0.1, "num": 3}
B2 = {"values": [0.95, 0.999]}


def make_sweep(factors: dict, **fields) -> ml_collections.ConfigDict:
  """A sweep config; factors keep their declaration order (sort_keys=False)."""
  base = dict(
      design="grid",
      num_points=16,
      replicates=1,
      seed=0,
      generators="",
      points=[],
      metric="loss",
  )
  base.update(fields)
  cfg = ml_collections.ConfigDict(base)
  cfg.factors = ml_collections.ConfigDict(factors, sort_keys=False)
  return cfg


def values_of(points, name):
  return np.array([p.values[name] for p in points])


# ----------------------------------------------------------------------------- grid


def test_grid_sizes_levels_and_log_spacing():
  cfg = make_sweep({"learning_rate": LR, "warmup": WARMUP, "b2": B2})
  points = make_design(cfg)
  assert len(points) == 5 * 3 * 2
  assert all(p.group == "all" and p.structural == {} for p in points)
  combos = {(p.values["learning_rate"], p.values["warmup"], p.values["b2"]) for p in points}
  assert len(combos) == 30  # Full crossing, no duplicates.
  lrs = sorted(set(values_of(points, "learning_rate")))
  np.testing.assert_array_equal(lrs, np.geomspace(1e-4, 1.0, 5))
  np.testing.assert_allclose(lrs, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-12)
  np.testing.assert_allclose(np.diff(np.log(lrs)), math.log(10.0), rtol=1e-12)
  np.testing.assert_array_equal(sorted(set(values_of(points, "warmup"))), [0.0, 0.05, 0.1])
  assert sorted(set(values_of(points, "b2"))) == [0.95, 0.999]
  # First declared factor changes slowest.
  assert [p.values["learning_rate"] for p in points[:6]] == [1e-4] * 6
  assert all(type(v) is float for p in points for v in p.values.values())


def test_int_scale_levels_are_rounded_unique_integers():
  cfg = make_sweep({"warmup": {"scale": "int", "low": 1, "high": 4, "num": 10}})
  assert [p.values["warmup"] for p in make_design(cfg)] == [1.0, 2.0, 3.0, 4.0]
  cfg = make_sweep({"warmup": {"scale": "int", "low": 0, "high": 10, "num": 4}})
  expected = np.unique(np.round(np.linspace(0, 10, 4)))
  np.testing.assert_array_equal(values_of(make_design(cfg), "warmup"), expected)


def test_single_level_and_no_value_factor():
  cfg = make_sweep({"learning_rate": {"scale": "log", "low": 0.1, "high": 1.0, "num": 1}})
  assert [p.values for p in make_design(cfg)] == [{"learning_rate": 0.1}]
  cfg = make_sweep({"optimizer": {"values": ["sgd", "adam"]}}, replicates=2)
  points = make_design(cfg)
  assert [(p.group, p.seed, p.values) for p in points] == [
      ("optimizer=sgd", 0, {}),
      ("optimizer=sgd", 1, {}),
      ("optimizer=adam", 0, {}),
      ("optimizer=adam", 1, {}),
  ]


# --------------------------------------------------------------------- random / QMC

DRAWN = {
    "learning_rate": {"scale": "log", "low": 1e-4, "high": 1.0},
    "warmup": {"scale": "linear", "low": 0.0, "high": 0.1},
    "b2": {"values": [0.9, 0.95, 0.999]},
    "clip_norm": {"scale": "int", "low": 1, "high": 5},
}


def check_in_ranges(points):
  lr, wu = values_of(points, "learning_rate"), values_of(points, "warmup")
  clip = values_of(points, "clip_norm")
  assert np.all((lr >= 1e-4) & (lr <= 1.0))
  assert np.all((wu >= 0.0) & (wu <= 0.1))
  assert set(values_of(points, "b2")) <= {0.9, 0.95, 0.999}
  assert np.all((clip >= 1) & (clip <= 5)) and np.all(clip == np.round(clip))


@pytest.mark.parametrize("kind", ["random", "sobol", "lhs"])
def test_drawn_designs_in_range_and_reproducible(kind):
  cfg = make_sweep(DRAWN, design=kind, num_points=16, seed=3)
  points = make_design(cfg)
  assert len(points) == 16
  check_in_ranges(points)
  again = make_design(make_sweep(DRAWN, design=kind, num_points=16, seed=3))
  assert [p.values for p in again] == [p.values for p in points]
  other = make_design(make_sweep(DRAWN, design=kind, num_points=16, seed=4))
  assert values_of(other, "learning_rate").tolist() != values_of(points, "learning_rate").tolist()
  # The sweep seed seeds the draws; replicate seeds do not change the value points.
  reps = make_design(make_sweep(DRAWN, design=kind, num_points=16, seed=3, replicates=2))
  assert [p.values for p in reps[::2]] == [p.values for p in points]


def test_random_distributions():
  factors = {
      "learning_rate": {"scale": "log", "low": 1e-4, "high": 1.0},
      "b2": {"values": [0.9, 0.95, 0.999]},
      "clip_norm": {"scale": "int", "low": 1, "high": 4},
  }
  points = make_design(make_sweep(factors, design="random", num_points=3000, seed=0))
  # Log-uniform: log10(lr) is uniform on [-4, 0].
  log_lr = np.log10(values_of(points, "learning_rate"))
  assert stats.kstest((log_lr + 4.0) / 4.0, "uniform").pvalue > 1e-3
  # Uniform choice and uniform integers: chi-square against equal counts.
  _, counts = np.unique(values_of(points, "b2"), return_counts=True)
  assert len(counts) == 3 and stats.chisquare(counts).pvalue > 1e-3
  _, counts = np.unique(values_of(points, "clip_norm"), return_counts=True)
  assert len(counts) == 4 and stats.chisquare(counts).pvalue > 1e-3


def to_unit(points):
  """Maps the DRAWN factors of points back to [0, 1) (log scale in log space)."""
  lr = (np.log(values_of(points, "learning_rate")) - math.log(1e-4)) / (-math.log(1e-4))
  wu = values_of(points, "warmup") / 0.1
  return np.stack([lr, wu], axis=1)


def test_sobol_matches_scipy_mapped_by_hand():
  n, seed = 16, 7
  points = make_design(make_sweep(DRAWN, design="sobol", num_points=n, seed=seed))
  u = qmc.Sobol(4, scramble=True, rng=seed).random(n)
  lr = np.exp(np.log(1e-4) + u[:, 0] * (np.log(1.0) - np.log(1e-4)))
  np.testing.assert_allclose(values_of(points, "learning_rate"), lr, rtol=1e-12)
  np.testing.assert_allclose(values_of(points, "warmup"), 0.1 * u[:, 1], rtol=1e-12, atol=1e-15)
  b2 = np.array([0.9, 0.95, 0.999])[np.floor(u[:, 2] * 3).astype(int)]
  np.testing.assert_array_equal(values_of(points, "b2"), b2)
  np.testing.assert_array_equal(values_of(points, "clip_norm"), 1 + np.floor(u[:, 3] * 5))
  # A scrambled Sobol' net of 2^4 points: one point in each 1/16 of every axis.
  strata = np.floor(to_unit(points) * n).astype(int)
  for column in strata.T:
    assert sorted(column) == list(range(n))


def test_lhs_one_point_per_stratum():
  n = 10
  points = make_design(make_sweep(DRAWN, design="lhs", num_points=n, seed=1))
  strata = np.floor(to_unit(points) * n).astype(int)
  for column in strata.T:
    assert sorted(column) == list(range(n))
  u = qmc.LatinHypercube(4, rng=1).random(n)
  np.testing.assert_allclose(values_of(points, "warmup"), 0.1 * u[:, 1], rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------- two-level designs


def signs(points, factors):
  """±1 coding: +1 where a factor is at its high (or last) level."""
  highs = {"learning_rate": 1.0, "warmup": 0.1, "b2": 0.999, "b1": 0.99, "eps": 1e-6}
  return np.array([[1 if p.values[f] == highs[f] else -1 for f in factors] for p in points])


def test_full_factorial_balanced_and_orthogonal():
  names = ["learning_rate", "warmup", "b2"]
  cfg = make_sweep({"learning_rate": LR, "warmup": WARMUP, "b2": B2}, design="factorial")
  points = make_design(cfg)
  assert len(points) == 8
  for p in points:  # Only the two end levels.
    assert p.values["learning_rate"] in (1e-4, 1.0) and p.values["warmup"] in (0.0, 0.1)
  x = signs(points, names)
  assert len({tuple(r) for r in x}) == 8
  np.testing.assert_array_equal(x.sum(axis=0), 0)
  np.testing.assert_array_equal(x.T @ x, 8 * np.eye(3))
  # The same runs as a 2^3 full factorial built with itertools.
  assert {tuple(r) for r in x} == set(itertools.product([-1, 1], repeat=3))


FOUR = {
    "learning_rate": LR,
    "b1": {"values": [0.8, 0.99]},
    "b2": B2,
    "eps": {"scale": "log", "low": 1e-8, "high": 1e-6},
}
FOUR_NAMES = ["learning_rate", "b1", "b2", "eps"]


def test_fractional_factorial_resolution_iv():
  cfg = make_sweep(FOUR, design="fractional_factorial", generators="a b c abc")
  x = signs(make_design(cfg), FOUR_NAMES)
  assert x.shape == (8, 4)
  a, b, c, d = x.T
  np.testing.assert_array_equal(d, a * b * c)
  np.testing.assert_array_equal(x.T @ x, 8 * np.eye(4))  # Main effects orthogonal.
  interactions = np.stack([x[:, i] * x[:, j] for i, j in itertools.combinations(range(4), 2)], 1)
  np.testing.assert_array_equal(x.T @ interactions, 0)  # Resolution IV: main ⟂ two-factor.
  # Defining relation I = ABCD: the half of the 2^4 full factorial with abcd = +1.
  full = np.array(list(itertools.product([-1, 1], repeat=4)))
  assert {tuple(r) for r in x} == {tuple(r) for r in full if r.prod() == 1}
  # Resolution exactly IV: ab is aliased with cd.
  np.testing.assert_array_equal(a * b, c * d)
  cfg = make_sweep(FOUR, design="fractional_factorial", generators="a b c -abc")
  other = signs(make_design(cfg), FOUR_NAMES)
  assert {tuple(r) for r in other} == {tuple(r) for r in full if r.prod() == -1}


def test_fractional_factorial_resolution_iii():
  factors = {"learning_rate": LR, "b1": {"values": [0.8, 0.99]}, "b2": B2}
  cfg = make_sweep(factors, design="fractional_factorial", generators="a b ab")
  x = signs(make_design(cfg), ["learning_rate", "b1", "b2"])
  assert x.shape == (4, 3)
  np.testing.assert_array_equal(x[:, 2], x[:, 0] * x[:, 1])
  np.testing.assert_array_equal(x.T @ x, 4 * np.eye(3))


# ----------------------------------------------------------- groups, replicates, seeds


def crossed_sweep(**fields):
  factors = {
      "optimizer": {"values": ["sgd", "adam"]},
      "learning_rate": {"scale": "log", "low": 1e-3, "high": 1e-1, "num": 3},
      "nesterov": {"values": [False, True]},
      "b2": {"values": [0.95, 0.999], "vmap": False},
      "warmup": WARMUP,
  }
  return make_sweep(factors, **fields)


def test_structural_crossing_replicates_and_common_random_numbers():
  points = make_design(crossed_sweep(replicates=3, seed=5))
  by_group = groups(points)
  assert list(by_group) == [
      f"optimizer={o},nesterov={n},b2={b}"
      for o in ("sgd", "adam")
      for n in (False, True)
      for b in (0.95, 0.999)
  ]
  assert len(points) == 8 * (3 * 3) * 3
  assert [p.point for p in points] == list(range(len(points)))
  first = [p.values for p in next(iter(by_group.values()))]
  for name, members in by_group.items():
    assert [p.values for p in members] == first  # Same value points in every group.
    assert {tuple(sorted(p.values)) for p in members} == {("learning_rate", "warmup")}
    assert all(p.structural == members[0].structural for p in members)
    assert name.startswith(f"optimizer={members[0].structural['optimizer']},")
  # Order: group-major, then value point, then replicate; seed = sweep.seed + replicate.
  for i, p in enumerate(points):
    assert p.replicate == i % 3 and p.seed == 5 + p.replicate
  # Common random numbers: the same replicate has the same seed in every group and value point.
  for r in range(3):
    assert {p.seed for p in points if p.replicate == r} == {5 + r}
  # Group values keep their declared types.
  assert type(points[0].structural["nesterov"]) is bool
  assert type(points[0].structural["b2"]) is float


def test_config_overrides_paths():
  factors = {name: {"values": [v]} for name, v in [
      ("optimizer", "adamw"), ("nesterov", True), ("centered", False), ("schedule", "cosine"),
      ("width", 32), ("depth", 2), ("heads", 4), ("context", 64), ("dtype", "bfloat16"),
      ("batch_size", 16), ("hidden", [64, 32]),
  ]}
  factors["weight_decay"] = {"values": [0.1], "vmap": False}
  factors["learning_rate"] = {"values": [0.01]}
  (point,) = make_design(make_sweep(factors))
  assert config_overrides(point) == {
      "optimizer.name": "adamw",
      "optimizer.nesterov": True,
      "optimizer.centered": False,
      "optimizer.schedule": "cosine",
      "model.width": 32,
      "model.depth": 2,
      "model.heads": 4,
      "model.context": 64,
      "model.dtype": "bfloat16",
      "data.batch_size": 16,
      "model.hidden": [64, 32],
      "optimizer.weight_decay": 0.1,
  }
  assert "learning_rate" not in str(config_overrides(point))
  assert point.group.endswith("hidden=64x32,weight_decay=0.1")
  # The paths apply to a ConfigDict with those fields.
  config = ml_collections.ConfigDict(dict(
      optimizer=dict(name="sgd", nesterov=False, centered=True, schedule="constant",
                     weight_decay=0.0),
      model=dict(width=8, depth=1, heads=1, context=8, dtype="float32", hidden=[8]),
      data=dict(batch_size=4),
  ))
  config.update_from_flattened_dict(config_overrides(point))
  assert config.model.hidden == [64, 32] and config.optimizer.weight_decay == 0.1


def test_columns_and_declaration_order():
  assert design_columns(crossed_sweep()) == [
      "point", "group", "replicate", "seed",
      "optimizer", "nesterov", "b2", "learning_rate", "warmup",
  ]
  # A ConfigDict built the default way sorts its keys; that order is the declaration order.
  cfg = ml_collections.ConfigDict(dict(crossed_sweep().to_dict()))
  assert design_columns(cfg)[4:] == ["b2", "nesterov", "optimizer", "learning_rate", "warmup"]


def test_explicit_points():
  pts = [{"learning_rate": 0.1, "b1": 0.9}, {"b1": 0.95, "learning_rate": 0.01}]
  factors = {"optimizer": {"values": ["sgd", "adam"]}, "learning_rate": {}, "b1": {}}
  points = make_design(make_sweep(factors, design="explicit", points=pts))
  assert [p.values for p in points] == pts * 2
  assert design_columns(make_sweep(factors, design="explicit", points=pts))[4:] == [
      "optimizer", "learning_rate", "b1",
  ]
  # No value factor declared: the points name any value factors.
  cfg = make_sweep({}, design="explicit", points=[{"momentum": 0.9}, {"momentum": 0.0}])
  assert [p.values for p in make_design(cfg)] == [{"momentum": 0.9}, {"momentum": 0.0}]
  assert design_columns(cfg) == ["point", "group", "replicate", "seed", "momentum"]


# ------------------------------------------------------------------------------ CSV


def test_csv_round_trip(tmp_path):
  factors = {
      "optimizer": {"values": ["sgd", "adam"]},
      "nesterov": {"values": [False, True]},
      "hidden": {"values": [[64, 32], [16]]},
      "width": {"values": [32]},
      "clip_norm": {"scale": "int", "low": 1, "high": 3, "num": 2, "vmap": False},
      "learning_rate": {"scale": "log", "low": 1e-4, "high": 1.0},
      "b2": {"values": [0.95, 0.999]},
  }
  cfg = make_sweep(factors, design="sobol", num_points=4, replicates=2, seed=11)
  points = make_design(cfg)
  path = tmp_path / "design.csv"
  write_design_csv(path, points, cfg)
  back = read_design_csv(path, cfg)
  assert back == points
  assert type(back[0].structural["clip_norm"]) is int
  assert type(back[0].structural["nesterov"]) is bool
  assert back[0].structural["hidden"] == [64, 32]
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == design_columns(cfg)
  assert len(rows) == 1 + len(points) and not list(tmp_path.glob("*.tmp"))
  # Another declaration order of the same factors reads the same file.
  reordered = make_sweep(dict(reversed(list(factors.items()))), design="sobol", num_points=4)
  assert [p.structural for p in read_design_csv(path, reordered)] == [
      p.structural for p in points
  ]
  with pytest.raises(ValueError, match=r"columns .* do not match"):
    read_design_csv(path, make_sweep({"learning_rate": LR}))
  bad = make_sweep({**factors, "optimizer": {"values": ["sgd", "rmsprop"]}}, design="sobol")
  with pytest.raises(ValueError, match=r"optimizer='adam' is not a value of "
                     r"sweep.factors.optimizer; choices: sgd, rmsprop"):
    read_design_csv(path, bad)


# --------------------------------------------------------------------------- errors

BAD_CONFIGS = {
    "design": (dict(design="halton"), ["sweep.design", "grid", "sobol", "explicit"]),
    "unknown_factor": (
        dict(factors={"lr": LR}),
        ["sweep.factors.lr", "learning_rate", "optimizer"],
    ),
    "seed_factor": (
        dict(factors={"seed": {"values": [0, 1]}}),
        ["sweep.factors.seed", "replicates"],
    ),
    "structural_vmap": (
        dict(factors={"width": {"values": [8, 16], "vmap": True}}),
        ["sweep.factors.width.vmap", "compiled program", "learning_rate", "clip_norm"],
    ),
    "structural_range": (
        dict(factors={"width": {"scale": "int", "low": 8, "high": 16, "num": 2}}),
        ["sweep.factors.width.values"],
    ),
    "low_high": (
        dict(factors={"learning_rate": {**LR, "low": 1.0, "high": 1e-4}}),
        ["sweep.factors.learning_rate.low", "less than", "sweep.factors.learning_rate.high"],
    ),
    "log_low": (
        dict(factors={"warmup": {"scale": "log", "low": 0.0, "high": 1.0, "num": 2}}),
        ["sweep.factors.warmup.low", "low > 0"],
    ),
    "num_zero": (
        dict(factors={"learning_rate": {**LR, "num": 0}}),
        ["sweep.factors.learning_rate.num", ">= 1"],
    ),
    "num_missing": (
        dict(factors={"learning_rate": {"scale": "log", "low": 1e-3, "high": 1.0}}),
        ["sweep.factors.learning_rate.num"],
    ),
    "num_missing_grouping": (
        dict(
            design="random",
            factors={"b2": {"scale": "linear", "low": 0.9, "high": 0.99, "vmap": False}},
        ),
        ["sweep.factors.b2.num"],
    ),
    "int_bounds": (
        dict(factors={"clip_norm": {"scale": "int", "low": 1.5, "high": 4, "num": 2}}),
        ["sweep.factors.clip_norm.low", "integer"],
    ),
    "scale": (
        dict(factors={"learning_rate": {**LR, "scale": "log2"}}),
        ["sweep.factors.learning_rate.scale", "log, linear, int"],
    ),
    "spec_field": (
        dict(factors={"learning_rate": {**LR, "hgih": 2.0}}),
        ["sweep.factors.learning_rate.hgih", "values, scale, low, high, num, vmap"],
    ),
    "values_and_scale": (
        dict(factors={"learning_rate": {**LR, "values": [0.1]}}),
        ["sweep.factors.learning_rate", "either 'values' or 'scale'"],
    ),
    "no_values_no_scale": (dict(factors={"b1": {}}), ["sweep.factors.b1", "'values'", "'scale'"]),
    "empty_values": (
        dict(factors={"optimizer": {"values": []}}),
        ["sweep.factors.optimizer.values", "non-empty"],
    ),
    "value_not_number": (
        dict(factors={"b2": {"values": [0.9, "0.99"]}}),
        ["sweep.factors.b2.values", "numbers"],
    ),
    "duplicate_values": (
        dict(factors={"b2": {"values": [0.9, 0.9]}}),
        ["sweep.factors.b2.values", "distinct"],
    ),
    "vmap_not_bool": (
        dict(factors={"b2": {**B2, "vmap": "no"}}),
        ["sweep.factors.b2.vmap", "True or False"],
    ),
    "replicates": (dict(replicates=0), ["sweep.replicates", ">= 1"]),
    "seed": (dict(seed=-1), ["sweep.seed", ">= 0"]),
    "num_points": (dict(design="random", num_points=0), ["sweep.num_points", ">= 1"]),
    "generators_count": (
        dict(design="fractional_factorial", generators="a b ab"),
        ["sweep.generators", "3 words", "4 vmapped value factors", "learning_rate, b1, b2, eps"],
    ),
    "generators_letter": (
        dict(design="fractional_factorial", generators="a b c abz"),
        ["sweep.generators", "'abz'", "base letters"],
    ),
    "generators_order": (
        dict(design="fractional_factorial", generators="b a c abc"),
        ["sweep.generators", "'a', 'b', 'c'"],
    ),
    "generators_repeat_letter": (
        dict(design="fractional_factorial", generators="a b c aab"),
        ["sweep.generators", "'aab'", "distinct"],
    ),
    "generators_confounded": (
        dict(design="fractional_factorial", generators="a b ab -ab"),
        ["sweep.generators", "'-ab'", "confounded"],
    ),
    "points_empty": (dict(design="explicit", points=[]), ["sweep.points", "non-empty list"]),
    "points_missing_factor": (
        dict(design="explicit", points=[{"learning_rate": 0.1, "b1": 0.9, "b2": 0.9}]),
        ["sweep.points[0]", "learning_rate, b1, b2, eps"],
    ),
    "points_not_number": (
        dict(design="explicit", points=[{"learning_rate": 0.1, "b1": 0.9, "b2": 0.9, "eps": None}]),
        ["sweep.points[0].eps", "finite number"],
    ),
    "points_unknown": (
        dict(design="explicit", factors={}, points=[{"lr": 0.1}]),
        ["sweep.points[0]", "'lr'", "learning_rate", "clip_norm"],
    ),
    "points_inconsistent": (
        dict(design="explicit", factors={}, points=[{"b1": 0.9}, {"b2": 0.9}]),
        ["sweep.points[1]", "same value factors", "b1"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_raises(case):
  fields, expected = BAD_CONFIGS[case]
  fields = dict(fields)
  factors = fields.pop("factors", FOUR)
  with pytest.raises(ValueError) as info:
    make_design(make_sweep(factors, **fields))
  for text in expected:
    assert text in str(info.value), (text, str(info.value))


def test_missing_field_named():
  cfg = make_sweep(FOUR, design="fractional_factorial")
  del cfg["generators"]
  with pytest.raises(ValueError, match=r"sweep\.generators is missing"):
    make_design(cfg)


def test_factors_come_from_the_optimizer_declarations(tmp_path):
  from jaxopt_lab.optim import factory, registry

  for name in registry.registered():
    declared = registry.resolve(name)
    assert set(declared.value_names) <= set(factory.value_factors())
    assert {f.name for f in declared.flags} <= set(factors_lib.structural_factors())
  assert not set(factors_lib.structural_factors()) & set(factory.value_factors())
  assert design_lib.Point is Point
  # A plugin the sweep names brings its own value (kappa) and flag (signed) as factors.
  plugin = tmp_path / "sub" / "my_opt.py"
  plugin.parent.mkdir()
  plugin.write_text(
      "import optax\n"
      "def sign_sgd(learning_rate, kappa=0.5, *, signed=True):\n"
      "  return optax.chain(optax.scale_by_sign(), optax.scale_by_learning_rate(learning_rate))\n")
  factors = {"optimizer": {"values": [f"{plugin}:sign_sgd"]}, "signed": {"values": [True]},
             "kappa": {"values": [0.25, 0.5]}}
  with pytest.raises(ValueError, match=r"sweep\.factors\.kappa: unknown factor"):
    make_design(make_sweep({"kappa": {"values": [0.25]}}))
  points = make_design(make_sweep(factors))
  assert [p.values for p in points] == [{"kappa": 0.25}, {"kappa": 0.5}]
  # The group name (a checkpoint directory) holds no '/'.
  assert points[0].group == "optimizer=my_opt.py:sign_sgd,signed=True"
  assert config_overrides(points[0]) == {"optimizer.name": f"{plugin}:sign_sgd",
                                         "optimizer.signed": True}
  path = tmp_path / "design.csv"
  write_design_csv(path, points, make_sweep(factors))
  # Without a 'scale', a range takes the declared one: the learning rate's is 'log'.
  ranged = make_design(make_sweep({"learning_rate": {"low": 1e-4, "high": 1.0, "num": 5},
                                   "warmup": {"low": 0.0, "high": 0.2, "num": 3}}))
  assert sorted({p.values["learning_rate"] for p in ranged}) == pytest.approx(
      [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
  assert sorted({p.values["warmup"] for p in ranged}) == pytest.approx([0.0, 0.1, 0.2])
  assert read_design_csv(path, make_sweep(factors)) == points
