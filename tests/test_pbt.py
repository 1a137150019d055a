"""Population-based training's decisions (sweep/adaptive/pbt.py): exploit, explore, replay,
validation."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest
import recorded_rows
from small_configs import classic_config
from workdir_faults import interrupt_after_flush

from jaxopt_lab import checkpoints, expdir, files, runloop
from jaxopt_lab.analysis import adaptive, document, lineage
from jaxopt_lab.optim import factory, registry
from jaxopt_lab.sweep import design, driver, programs
from jaxopt_lab.sweep.adaptive import pbt
from jaxopt_lab.sweep.adaptive import runner as staged
from jaxopt_lab.sweep.factors import Factor

STEPS = 40
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pbt_config(seed: int = 3, replicates: int = 2, **adaptive) -> ml_collections.ConfigDict:
  """8 members (4 learning rates x 2 b1) x `replicates` seeds of adam on the classic task."""
  config = classic_config("adam", steps=STEPS)
  config.sweep.design = "pbt"
  config.sweep.seed = seed
  config.sweep.replicates = replicates
  config.sweep.factors = ml_collections.ConfigDict({
      "learning_rate": {"scale": "log", "low": 1e-3, "high": 1.0, "num": 4},
      "b1": {"values": [0.8, 0.9]},
  }, sort_keys=False)
  config.sweep.adaptive.update(dict(interval=15, fraction=0.25, perturb=[0.8, 1.25],
                                    resample=0.25))
  config.sweep.adaptive.update(adaptive)
  return config


def make_group(config: ml_collections.ConfigDict) -> types.SimpleNamespace:
  """The fields of a driver group that a policy reads: its config, points and hparams."""
  points = design.make_design(config.sweep, config.train.steps)
  per_point = []
  for p in points:
    opt = ml_collections.ConfigDict(config.optimizer.to_dict())
    opt.update(p.values)
    per_point.append(factory.hparams_from_config(opt))
  hparams = {k: np.array([h[k] for h in per_point], np.float32) for k in per_point[0]}
  return types.SimpleNamespace(name=points[0].group, config=config, points=points,
                               hparams=hparams)


def test_truncation_against_a_hand_worked_table():
  # Ranked (stable; NaN is inf): 2 (0.1), 7 (0.1), 5, 3, 0, 6, 1 (inf), 4 (NaN). fraction 0.25 of
  # 8 -> n = 2: the worst two, worst first, are [4, 1]; the best two [2, 7]. The generator
  # (0, 2) draws [1, 0] from integers(0, 2): donors [7, 2].
  scores = np.array([0.5, np.inf, 0.1, 0.3, np.nan, 0.2, 0.9, 0.1])
  recipients, donors = pbt.truncation(scores, 0.25, np.random.default_rng((0, 2)))
  np.testing.assert_array_equal(recipients, [4, 1])
  np.testing.assert_array_equal(donors, [7, 2])
  # n = min(ceil(fraction * M), M // 2): 0.5 of 5 members is 2 (not 3: no member is both).
  recipients, donors = pbt.truncation(np.arange(5.0), 0.5, np.random.default_rng(0))
  np.testing.assert_array_equal(recipients, [4, 3])
  assert set(donors) <= {0, 1}
  # Three of four diverged: the best two are [3, 0], the worst [2, 1]; the generator (1) draws
  # [0, 1]: 2 <- 3 is kept, 1 <- 0 dropped (its donor diverged too).
  recipients, donors = pbt.truncation(np.array([np.inf, np.nan, np.inf, 1.0]), 0.5,
                                      np.random.default_rng(1))
  np.testing.assert_array_equal(recipients, [2])
  np.testing.assert_array_equal(donors, [3])
  # The smallest fraction still moves one member.
  recipients, donors = pbt.truncation(np.array([2.0, 1.0]), 0.01, np.random.default_rng(0))
  np.testing.assert_array_equal(recipients, [0])
  np.testing.assert_array_equal(donors, [1])


def test_exploit_copies_the_donors_replicates_by_member_mean():
  config = pbt_config(seed=3)
  group = make_group(config)
  policy = pbt.Policy(group, config)
  # Members are value points, their replicates kept together, in design order.
  np.testing.assert_array_equal(policy.members, np.arange(16).reshape(8, 2))
  first = policy.first()
  assert (first.index, first.end, first.source, first.hparams) == (0, 15, None, None)
  # Member means: [0.5, inf, 0.1, 0.3, NaN, 0.2, 0.9, 0.15]. Member 3's replicate 0 is the best
  # single score, yet its mean ranks it 4th: ranking is by the member's mean.
  per_replicate = np.array([[0.45, 0.55], [0.4, np.inf], [0.05, 0.15], [0.05, 0.55],
                            [np.nan, 0.3], [0.15, 0.25], [0.85, 0.95], [0.1, 0.2]])
  stage = policy.next(first, per_replicate.ravel())
  # Worst two [4, 1], best two [2, 7]; generator (seed 3, stage 1) draws [1, 0]: 4 <- 7, 1 <- 2.
  source = np.arange(16)
  source[[8, 9]] = [14, 15]
  source[[2, 3]] = [4, 5]
  np.testing.assert_array_equal(stage.source, source)
  np.testing.assert_array_equal(stage.slots, np.arange(16))
  assert (stage.index, stage.end) == (1, 30)
  assert "8<-14" in stage.note and "2<-4" in stage.note
  for name, values in stage.hparams.items():
    assert values.dtype == np.float32 and values.shape == (16,)
    kept = np.ones(16, bool)
    kept[[2, 3, 8, 9]] = False
    np.testing.assert_array_equal(values[kept], group.hparams[name][kept])  # untouched
    if name not in ("learning_rate", "b1"):  # not swept: the donor's (the group's) value
      np.testing.assert_array_equal(values, group.hparams[name])
  for recipient in ([2, 3], [8, 9]):  # one explored value per member, shared by its replicates
    for name in ("learning_rate", "b1"):
      assert stage.hparams[name][recipient[0]] == stage.hparams[name][recipient[1]]


def test_explore_perturbs_exactly_and_clips_to_the_declared_and_valid_ranges():
  settings = pbt.Settings(10, 0.25, (0.5,), 0.0, 40, 0, ())
  lr = Factor("learning_rate", True, scale="log", low=1e-3, high=1.0)
  lo, hi = pbt.value_range(lr, "adam")
  assert (lo, hi) == (np.float32(1e-3), np.float32(1.0))
  rng = np.random.default_rng(0)
  assert pbt.explore(0.1, lr, settings, lo, hi, rng) == np.float32(0.05)
  assert pbt.explore(1.5e-3, lr, settings, lo, hi, rng) == lo  # 7.5e-4 clipped up
  up = dataclasses.replace(settings, perturb=(1.25,))
  assert pbt.explore(0.4, lr, up, lo, hi, rng) == np.float32(0.5)
  assert pbt.explore(0.9, lr, up, lo, hi, rng) == hi  # 1.125 clipped down
  # A declared range beyond the optimizer's: b1 in [0.5, 1.0] stays below 1 (adam: [0, 1)).
  b1 = Factor("b1", True, scale="linear", low=0.5, high=1.0)
  lo, hi = pbt.value_range(b1, "adam")
  assert hi < 1.0 and hi == np.nextafter(np.float32(1.0), np.float32(0.0))
  assert pbt.explore(0.9, b1, up, lo, hi, rng) == hi
  # Factors given by values: [min, max] of the values, the float32 ends inside it (float32(1e-8)
  # is below 1e-8: the next float32 up).
  eps = Factor("eps", True, values=(1e-8, 1e-6, 1e-7))
  lo, hi = pbt.value_range(eps, "adam")
  assert float(np.float32(1e-8)) < 1e-8 <= float(lo)
  assert lo == np.nextafter(np.float32(1e-8), np.float32(1.0))
  assert float(hi) <= 1e-6 < float(np.nextafter(hi, np.float32(1.0)))


@pytest.mark.parametrize("resample", [0.0, 0.5, 1.0])
def test_explore_never_leaves_the_ranges(resample):
  factors = [
      Factor("learning_rate", True, scale="log", low=1e-4, high=0.3),
      Factor("b1", True, scale="linear", low=0.5, high=1.0),
      Factor("b2", True, values=(0.99, 0.9, 0.999)),
      Factor("eps", True, scale="log", low=1e-9, high=1e-6),
      Factor("warmup", True, scale="linear", low=0.0, high=0.5),
  ]
  settings = pbt.Settings(10, 0.25, (0.5, 0.8, 1.25, 3.0), resample, 40, 0, tuple(factors))
  specs = {v.name: v for v in (*registry.resolve("adam").values, *factory.COMMON_VALUES)}
  rng = np.random.default_rng(1)
  for f in factors:
    declared = (min(f.values), max(f.values)) if f.values else (f.low, f.high)
    lo, hi = pbt.value_range(f, "adam")
    value = float(np.float32(f.draw(rng, 1)[0]))
    seen = []
    for _ in range(2000):  # a chain of moves, as a member's value over many stages
      value = pbt.explore(value, f, settings, lo, hi, rng)
      assert value.dtype == np.float32
      seen.append(float(value))
      value = float(value)
    seen = np.array(seen)
    assert seen.min() >= declared[0] and seen.max() <= declared[1], f.name
    specs[f.name].check(seen, f.name)  # the optimizer's own range check
    if resample == 1.0:  # fresh draws cover the range
      assert seen.min() < declared[0] + 0.1 * (declared[1] - declared[0]) or f.scale == "log"


def run_stages(policy: pbt.Policy, seed: int) -> list:
  rng = np.random.default_rng(seed)
  out, stage = [], policy.first()
  while stage is not None:
    out.append(stage)
    stage = policy.next(stage, rng.normal(size=len(stage.slots)))
  return out


def same_stages(a: list, b: list) -> bool:
  if len(a) != len(b):
    return False
  for x, y in zip(a, b, strict=True):
    if (x.index, x.end, x.note) != (y.index, y.end, y.note):
      return False
    if not np.array_equal(x.slots, y.slots):
      return False
    if (x.source is None) != (y.source is None) or (
        x.source is not None and not np.array_equal(x.source, y.source)):
      return False
    if (x.hparams is None) != (y.hparams is None) or (x.hparams is not None and any(
        not np.array_equal(x.hparams[k], y.hparams[k]) for k in x.hparams)):
      return False
  return True


def test_a_replay_makes_the_same_decisions_and_the_stages_cover_the_steps():
  config = pbt_config(seed=3, interval=7)
  group = make_group(config)
  first = run_stages(pbt.Policy(group, config), seed=0)
  again = run_stages(pbt.Policy(make_group(config), config), seed=0)
  assert same_stages(first, again)
  assert [s.end for s in first] == [7, 14, 21, 28, 35, 40]
  # A resumed run replays one decision from the stage on disk: the same next stage.
  policy = pbt.Policy(group, config)
  scores = np.random.default_rng(0).normal(size=16)
  assert same_stages([policy.next(first[2], scores)], [policy.next(first[2], scores)])
  # The decisions depend on sweep.seed (the generator is really used).
  other = run_stages(pbt.Policy(group, pbt_config(seed=4, interval=7)), seed=0)
  assert not same_stages(first, other)
  # Explore kept every value in its range over all stages.
  for stage in first[1:]:
    assert stage.hparams["learning_rate"].min() >= np.float32(1e-3)
    assert stage.hparams["learning_rate"].max() <= np.float32(1.0)
    assert stage.hparams["b1"].min() >= 0.8 and stage.hparams["b1"].max() <= 0.9


@pytest.mark.parametrize("field, value, expected", [
    ("interval", 0, "sweep.adaptive.interval: PBT needs an int > 0 and < train.steps (40)"),
    ("interval", STEPS, "sweep.adaptive.interval: PBT needs an int > 0"),
    ("interval", 2.5, "sweep.adaptive.interval: must be an int (steps between two exploit"),
    ("interval", True, "sweep.adaptive.interval: must be an int (steps between two exploit"),
    ("fraction", 0.0, "sweep.adaptive.fraction: must be a number in (0, 0.5]"),
    ("fraction", 0.6, "sweep.adaptive.fraction: must be a number in (0, 0.5]"),
    ("perturb", [], "sweep.adaptive.perturb: must be a list of positive numbers, not all 1"),
    ("perturb", [1.0, 1], "sweep.adaptive.perturb: must be a list of positive numbers"),
    ("perturb", [0.8, -1.25], "sweep.adaptive.perturb: must be a list of positive numbers"),
    ("perturb", [0.8, math.inf], "sweep.adaptive.perturb: must be a list of positive numbers"),
    ("resample", -0.1, "sweep.adaptive.resample: must be a probability in [0, 1]"),
    ("resample", 1.5, "sweep.adaptive.resample: must be a probability in [0, 1]"),
    ("initial", "explicit", "sweep.adaptive.initial: 'explicit' cannot start the 'pbt' design"),
])
def test_bad_settings_are_one_line_errors_naming_the_field(field, value, expected):
  config = pbt_config()
  # A fresh dict: a ConfigDict would refuse a float where it holds an int before we see it.
  adaptive = config.sweep.adaptive.to_dict() | {field: value}
  config.sweep.adaptive = ml_collections.ConfigDict(adaptive)
  with pytest.raises(ValueError) as err:
    pbt.validate(config)
  assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_one_member_is_an_error_and_good_settings_pass():
  config = pbt_config()
  config.sweep.factors = ml_collections.ConfigDict({"learning_rate": {"values": [0.1]}})
  with pytest.raises(ValueError, match=r"^sweep.factors: PBT needs at least 2 members .*got 1"):
    pbt.validate(config)
  settings = pbt.validate(pbt_config())
  assert (settings.interval, settings.fraction, settings.perturb, settings.resample,
          settings.steps, settings.seed) == (15, 0.25, (0.8, 1.25), 0.25, STEPS, 3)
  assert sorted(f.name for f in settings.factors) == ["b1", "learning_rate"]


# ---------------------------------------------------------------------------------------------
# End to end: the stage runner (sweep/adaptive/runner.py) runs the policy.

E2E_CONFIG = '''
import ml_collections
from jaxopt_lab.configs import base_config


def get_config():
  config = base_config("classic")
  config.optimizer.name = "adam"
  config.train.update(dict(steps=30, steps_per_call=10, log_every=10, eval_every=10,
                           checkpoint_every=10))
  config.sweep.design = "pbt"
  config.sweep.replicates = 2
  config.sweep.report = False
  config.sweep.factors = ml_collections.ConfigDict(
      {"learning_rate": {"scale": "log", "low": 1e-3, "high": 1.0, "num": 4}})
  config.sweep.adaptive.interval = 10
  return config
'''


def read_csv(path) -> list[dict[str, str]]:
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def test_pbt_runs_end_to_end_from_the_sweep_script(tmp_path):
  (tmp_path / "pbt_config.py").write_text(E2E_CONFIG)
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "sweep.py"),
       f"--config={tmp_path / 'pbt_config.py'}", f"--workdir={workdir}"],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_csv(workdir / expdir.STAGES_FILE)
  design_rows = {int(r["point"]): r for r in read_csv(workdir / expdir.DESIGN_FILE)}
  # 4 members x 2 replicates, 3 stages of 10 steps; in stages 1 and 2 one member (fraction
  # 0.25 of 4) copies the best one's state: two rows each, replicate r from replicate r.
  assert [(r["stage"], r["begin"], r["end"]) for r in rows] == (
      [("0", "0", "10")] * 8 + [("1", "10", "20")] * 8 + [("2", "20", "30")] * 8)
  for k in ("1", "2"):
    copied = [r for r in rows if r["stage"] == k and r["source"] != r["point"]]
    assert len(copied) == 2
    for r in copied:
      point, source = design_rows[int(r["point"])], design_rows[int(r["source"])]
      assert point["seed"] == source["seed"] and point["learning_rate"] != source["learning_rate"]
      assert 1e-3 <= float(r["hp_learning_rate"]) <= 1.0
  assert all(r["source"] == "-1" for r in rows[:8])
  summary = read_csv(workdir / expdir.SUMMARY_FILE)
  assert len(summary) == 8 and {(r["status"], r["steps"]) for r in summary} == {("ok", "30")}
  # The report's section reads the run: PBT trains every point to the end (8 x 30 steps).
  doc = document.Document()
  figures, tables = adaptive.section(doc, workdir)
  assert set(figures) == {lineage.LINEAGE_FIGURE, lineage.SCHEDULES_FIGURE}
  total = tables["adaptive_compute.csv"][1][-1]
  assert (total["points"], total["point_steps"], total["exploits"]) == ("8", "240", "4")
  assert len(tables["adaptive_population.csv"][1]) == 8
  with open(workdir / expdir.RUN_FILE, encoding="utf-8") as f:  # the runner's own tally agrees
    groups = json.load(f)["groups"]
  assert sum(g["points_steps"] for g in groups) == 240


def e2e_config(**train_fields) -> ml_collections.ConfigDict:
  namespace = {}
  exec(E2E_CONFIG, namespace)  # noqa: S102  (the same config as the script's)
  config = namespace["get_config"]()
  config.train.update(train_fields)
  return config


# Checkpoints (and metric rows) every 5 steps: a kill can land inside a stage.
IN_PROCESS = dict(steps_per_call=5, log_every=5, checkpoint_every=5)


@pytest.fixture(scope="module")
def pbt_run(tmp_path_factory):
  """An uninterrupted PBT sweep, with the populations before and after each exploit's gather."""
  workdir = tmp_path_factory.mktemp("pbt")
  gathered = []
  real_gather = staged.gather

  def spy(pop, index, sharding):
    out = real_gather(pop, index, sharding)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        pop)
    gathered.append((like, np.asarray(index), programs.to_host(pop), programs.to_host(out)))
    return out

  staged.gather = spy
  try:
    driver.run_sweep(e2e_config(**IN_PROCESS), str(workdir))
  finally:
    staged.gather = real_gather
  return workdir, gathered


def test_an_exploit_copies_the_donors_checkpointed_state_exactly(pbt_run):
  workdir, gathered = pbt_run
  assert len(gathered) == 2  # before stages 1 and 2
  rows = read_csv(workdir / expdir.STAGES_FILE)
  group = rows[0]["group"]
  slot = {int(r["point"]): j for j, r in enumerate(r for r in rows if r["stage"] == "0")}
  for k, (like, index, before, after) in enumerate(gathered, start=1):
    # The state that stage k-1 ended with, as its checkpoint holds it.
    ckpt = checkpoints.Checkpointer(workdir / expdir.CHECKPOINTS_DIR / group / f"stage-{k - 1}")
    saved = programs.to_host(ckpt.restore(10 * k, like))
    ckpt.close()
    copied = [(slot[int(r["point"])], slot[int(r["source"])]) for r in rows
              if r["stage"] == str(k) and r["source"] != r["point"]]
    assert len(copied) == 2
    for recipient, donor in copied:
      assert index[recipient] == donor
      for a, b, c in zip(jax.tree.leaves(after), jax.tree.leaves(saved),
                         jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(a[recipient], b[donor])  # bit for bit
        np.testing.assert_array_equal(a[recipient], c[donor])
    kept = [j for j in range(8) if j not in {r for r, _ in copied}]
    assert list(index[kept]) == kept
    # The recipient's parameters really changed (the test could fail).
    params = [x for x in jax.tree.leaves(after.state.params) if x.ndim > 1][0]
    old = [x for x in jax.tree.leaves(before.state.params) if x.ndim > 1][0]
    assert not np.array_equal(params[copied[0][0]], old[copied[0][0]])


def test_a_sweep_killed_mid_stage_resumes_to_the_same_population(pbt_run, tmp_path, caplog):
  reference, _ = pbt_run
  workdir = str(tmp_path / "killed")
  # the 4th write: stage 1 (steps 10 -> 20) wrote step 20, before its checkpoint there
  with interrupt_after_flush(4), pytest.raises(runloop.Interrupted):
    driver.run_sweep(e2e_config(**IN_PROCESS), workdir)
  rows = read_csv(os.path.join(workdir, expdir.STAGES_FILE))
  assert {r["stage"] for r in rows} == {"0", "1"}  # killed inside stage 1
  metrics = files.read_jsonl(os.path.join(workdir, expdir.METRICS_FILE))
  assert max(r["step"] for r in metrics) == 20
  stage_1 = os.path.join(workdir, expdir.CHECKPOINTS_DIR, rows[0]["group"], "stage-1")
  assert os.listdir(stage_1) == ["15"]  # the resume continues from inside the stage
  # The rerun says where it resumed, and its first write (stopped there, before any save: a
  # resume from the stage's start would otherwise end in orbax refusing to save over step 15)
  # holds the uninterrupted run's rows up to step 20.
  with caplog.at_level(logging.INFO), interrupt_after_flush(1), pytest.raises(runloop.Interrupted):
    driver.run_sweep(e2e_config(**IN_PROCESS), workdir)
  said = [m for m in caplog.messages if "resumed at step" in m]
  assert len(said) == 1 and said[0].startswith(f"Group {rows[0]['group']}, stage 1: ")
  assert said[0].endswith(" (resumed at step 15).")
  assert files.read_jsonl(os.path.join(workdir, expdir.METRICS_FILE)) == [
      r for r in files.read_jsonl(os.path.join(reference, expdir.METRICS_FILE)) if r["step"] <= 20]
  driver.run_sweep(e2e_config(**IN_PROCESS), workdir)
  for name in (expdir.METRICS_FILE, expdir.SUMMARY_FILE, expdir.DESIGN_FILE,
               expdir.STAGES_FILE):
    with open(os.path.join(workdir, name)) as a, open(os.path.join(reference, name)) as b:
      assert a.read() == b.read(), name


def test_a_bad_setting_from_the_script_is_one_line_and_writes_nothing(tmp_path):
  workdir = tmp_path / "w"
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "sweep.py"),
       "--config=experiments/sweep_classic_lr.py", "--config.sweep.design=pbt",
       "--config.sweep.adaptive.resample=1.5", "--config.sweep.adaptive.interval=50",
       f"--workdir={workdir}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: sweep.adaptive.resample: must be a probability in [0, 1]")
  assert not workdir.exists()


def accuracy_config() -> ml_collections.ConfigDict:
  """The end-to-end PBT sweep tuned on valid accuracy (maximised), explore by perturbation only:
  8 members (4 learning rates x 2 b1) x 2 replicates, decisions at steps 10 and 20."""
  config = e2e_config()
  config.sweep.metric = "accuracy"
  config.sweep.factors = ml_collections.ConfigDict({
      "learning_rate": {"scale": "log", "low": 1e-3, "high": 1.0, "num": 4},
      "b1": {"values": [0.8, 0.9]},
  }, sort_keys=False)
  config.sweep.adaptive.update(dict(fraction=0.25, perturb=[0.8, 1.25], resample=0.0))
  return config


def test_pbt_on_accuracy_copies_the_best_members_values_times_a_perturbation(tmp_path):
  """Checked from the recorded rows only (design.csv, stages.csv, metrics.jsonl).

  At each decision the recipients are the worst n = 2 of the 8 members by their mean valid
  accuracy over the replicates (ranked as the policy documents: best first, ties in design
  order), each donor is one of the best 2, replicate r continues from the donor's replicate r,
  and with resample = 0 each swept value of a recipient is its donor's value times 0.8 or 1.25,
  in float32, clipped to the declared range (the float32 ends of [1e-3, 1] and [0.8, 0.9] lie
  inside them and inside adam's valid ranges, so they are the clip's bounds).
  """
  driver.run_sweep(accuracy_config(), str(tmp_path))
  points = {int(p["point"]): p for p in read_csv(tmp_path / expdir.DESIGN_FILE)}
  member_of = {i: (p["learning_rate"], p["b1"]) for i, p in points.items()}
  members = list(dict.fromkeys(member_of.values()))  # design order
  replicates = {m: sorted((i for i in points if member_of[i] == m),
                          key=lambda i: int(points[i]["replicate"])) for m in members}
  valid = recorded_rows.valid_metric(tmp_path, "accuracy")
  by_stage = recorded_rows.stages(tmp_path)
  assert len(by_stage) == 3
  bounds = {"learning_rate": (np.float32(1e-3), np.float32(1.0)),
            "b1": (np.float32(0.8), np.float32(0.9))}
  own_value_differs = False
  for stage, after in zip(by_stage[:-1], by_stage[1:], strict=True):
    end = int(stage[0]["end"])
    accuracy = np.array([np.mean([valid[(i, end)] for i in replicates[m]]) for m in members])
    rank = np.argsort(-accuracy, kind="stable")
    best, worst = {members[i] for i in rank[:2]}, {members[i] for i in rank[-2:]}
    assert accuracy[rank[:2]].mean() > accuracy[rank[-2:]].mean()  # the ranking has power
    before = {int(r["point"]): r for r in stage}
    copied = [r for r in after if r["source"] != r["point"]]
    assert {member_of[int(r["point"])] for r in copied} == worst
    assert len(copied) == 2 * 2
    for row in copied:
      point, donor = int(row["point"]), int(row["source"])
      assert member_of[donor] in best
      assert points[donor]["replicate"] == points[point]["replicate"]
      for name, (lo, hi) in bounds.items():
        donor_value = np.float32(before[donor][f"hp_{name}"])
        allowed = {np.clip(np.float32(float(donor_value) * f), lo, hi) for f in (0.8, 1.25)}
        new = np.float32(row[f"hp_{name}"])
        assert new in allowed, (name, point, donor, new, allowed)
        own_value_differs |= np.float32(before[point][f"hp_{name}"]) != donor_value
  assert own_value_differs  # a recipient perturbing its own value would be seen
