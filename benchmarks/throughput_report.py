"""The tables and target verdicts of `sweep_throughput.py`, from its list of (spec, result).

A row's rates are points x steps per second, timed in turn in one child process: the sweep
(`e2e`, `program`), the single-run trainer's loops (`seq_step`, `seq_scan`) and the independent
baselines of `baselines.py` (`plain_step`, `plain_scan`, `plain_vmap`, `torch<threads>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.common import EXPERIMENT, fmt

# The driver's rows run as scripts/sweep.py does: slices sized by `sweep.slice_size = -1` and
# one XLA CPU device per core, at most one per point.
MAIN_WIDTH = -1
BASELINES = {"plain_step": "plain step", "plain_scan": "plain scan",
             "plain_vmap": "plain vmap", "torch": "PyTorch"}
Results = list[tuple[dict[str, Any], dict[str, Any]]]


def main_devices(n: int, cpus: int) -> int:
  """`driver.default_cpu_devices` of a one-group sweep of n points on `cpus` cores."""
  return min(cpus, n)


def width_label(width: int) -> str:
  return {0: "all", -1: "auto"}.get(width, str(width))


def label(spec: dict[str, Any]) -> str:
  """A measurement's short name, e.g. `digits N=8 w=auto 2dev`."""
  if spec["kind"] != "sweep":
    return f"{spec['kind']} {spec.get('task', '')}".strip()
  parts = [spec["task"], f"N={spec['n']}", f"w={width_label(spec['width'])}",
           f"{spec['devices']}dev"]
  if spec["allocator"] != "default":
    parts.append(spec["allocator"])
  return " ".join(parts)


def find(results: Results, **match) -> dict[str, Any] | None:
  """The first result whose spec has `match`, and that ran."""
  for spec, out in results:
    if all(spec.get(k) == v for k, v in match.items()) and "error" not in out and (
        "skipped" not in out):
      return out
  return None


def rate(out: dict[str, Any]) -> float:
  """The rate a row stands for: end to end, the sweep's run loop over several chunks (the host
  builds the next chunk's batches while the devices compute, the late fetch), as a sweep trains
  between log steps (`program` is shown beside it)."""
  return out["rate_e2e"]


def best_baseline(out: dict[str, Any]) -> tuple[str | None, float | None]:
  """The fastest independent baseline timed with the row: (its key, its rate)."""
  rates = {k: out[f"rate_{k}"] for k in BASELINES if out.get(f"rate_{k}")}
  if not rates:
    return None, None
  name = max(rates, key=rates.get)
  return name, rates[name]


def vs(key: str):
  """`(spec, out) -> ` the row's rate over its rate of `key` (a baseline or `best`)."""
  def ratio(spec, out):
    del spec
    ref = best_baseline(out)[1] if key == "best" else out.get(f"rate_{key}")
    return rate(out) / ref if ref else None

  return ratio


def gap(out: dict[str, Any]) -> float | None:
  """How much slower end to end is than the program alone: 1 - e2e / program."""
  return 1.0 - out["rate_e2e"] / out["rate_program"] if out.get("rate_program") else None


def row_mfu(out: dict[str, Any], peak: float | None) -> float | None:
  """Model FLOPs of the row's rate over the matmul peak timed in turn with it (else `peak`)."""
  reference = out.get("rate_matmul") or peak
  if not reference or not out.get("flops_per_step"):
    return None
  return rate(out) * out["flops_per_step"] / reference


def _pct(x: float | None) -> str:
  return "–" if x is None else f"{100 * x:.1f}%"


def _verdict(ok: bool) -> str:
  return "met" if ok else "NOT met"


def report(results: Results, tasks: Sequence[str], points: Sequence[int],
           cpus: int) -> tuple[str, list[dict[str, Any]]]:
  """The Markdown tables and the target verdicts."""
  lines: list[str] = []
  targets: list[dict[str, Any]] = []
  peak_out = find(results, kind="peak")
  peak = peak_out["peak_flops"] if peak_out else None
  if peak_out:
    lines.append(f"Measured matmul peak: {peak / 1e9:,.1f} GFLOP/s "
                 f"({peak_out['device']}, float32, best of n = 512, 1024, 2048); the digits "
                 "and LM rows divide by a 1024² matmul timed in turn with them instead.\n")
  for task in tasks:
    shrunk = any(s.get("shrink") for s, _ in results if s.get("task") == task)
    lines.append(f"### {task} ({EXPERIMENT[task]}{', shrunk' if shrunk else ''})\n")
    seq = find(results, kind="seq", task=task)
    if seq:
      lines.append(
          f"One point after another, alone in a process: the single-run trainer's step "
          f"{fmt(seq['rate_step'])} and scan {fmt(seq['rate_scan'])}; plain JAX + Optax step "
          f"{fmt(seq.get('rate_plain_step'))} and scan {fmt(seq.get('rate_plain_scan'))} "
          f"points × steps/s (peak RSS {seq['peak_rss_mb']:,.0f} MB, load "
          f"{seq['load_before']:.1f}).")
    skipped = next((o["torch_skipped"] for s, o in results
                    if s.get("task") == task and "torch_skipped" in o), None)
    version = next((o["torch_version"] for s, o in results
                    if s.get("task") == task and "torch_version" in o), None)
    if version:
      lines.append(f"PyTorch {version}; the PyTorch column is its faster thread count "
                   "(in brackets).")
    elif skipped:
      lines.append(f"PyTorch loop skipped: {skipped}.")
    lines += ["", "| N | slice | setup | e2e | program | gap | our step | plain step | "
              "plain scan | plain vmap | PyTorch | × best baseline | MFU | compile s | "
              "peak RSS MB | XLA MB | load |", "|" + "---|" * 17]
    rows = [(s, o) for s, o in results if s["kind"] == "sweep" and s["task"] == task]
    rows.sort(key=lambda so: (so[0]["n"], so[0]["allocator"] != "default", so[0]["allocator"],
                              so[0]["devices"] != main_devices(so[0]["n"], cpus),
                              so[0]["width"] != MAIN_WIDTH, so[0]["width"] or 10**6))
    for spec, out in rows:
      name = (f"{spec['devices']} dev" + (", auto slices" if spec["width"] == MAIN_WIDTH else "")
              + (f", {spec['allocator']}" if spec["allocator"] != "default" else ""))
      if "error" in out or "skipped" in out:
        lines.append(f"| {spec['n']} | {width_label(spec['width'])} | {name} | "
                     f"{out.get('error') or out.get('skipped')} |" + " |" * 13)
        continue
      best_name, _ = best_baseline(out)
      ratio = vs("best")(spec, out)
      vmap = fmt(out.get("rate_plain_vmap"))
      if out.get("plain_vmap_points") and out["plain_vmap_points"] < spec["n"]:
        vmap += f" ({out['plain_vmap_points']} pts)"
      torch = fmt(out.get("rate_torch"))
      if out.get("torch_threads"):
        torch += f" ({out['torch_threads']})"
      lines.append(
          f"| {spec['n']} | {out['width']} | {name} | **{fmt(rate(out))}** | "
          f"{fmt(out['rate_program'])} | {_pct(gap(out))} | {fmt(out.get('rate_seq_step'))} | "
          f"{fmt(out.get('rate_plain_step'))} | {fmt(out.get('rate_plain_scan'))} | {vmap} | "
          f"{torch} | **{fmt(ratio)}**"
          f"{f' ({BASELINES[best_name]})' if best_name else ''} | "
          f"{_pct(row_mfu(out, peak))} | {out['compile_s']:.1f} | {out['peak_rss_mb']:,.0f} | "
          f"{fmt(out['xla_bytes'] / 2**20 if out.get('xla_bytes') else None)} | "
          f"{out['load_before']:.1f} |")
    lines.append("")
    targets += task_targets(task, results, peak, points, cpus)
  if targets:
    lines += ["### Targets\n", "| target | driver now | verdict | best measured setup | verdict |",
              "|---|---|---|---|---|"]
    for t in targets:
      verdict = t["words"][0 if t["now_ok"] else 1] if "words" in t else _verdict(t["now_ok"])
      lines.append(f"| {t['target']} | {t['now']} | {verdict} | {t.get('variant', '–')} | "
                   f"{_verdict(t['variant_ok']) if 'variant_ok' in t else '–'} |")
  return "\n".join(lines) + "\n", targets


def _main(results: Results, task: str, n: int, cpus: int, **match) -> dict[str, Any] | None:
  """The row of (task, n) as scripts/sweep.py runs it: auto slices, a device per core."""
  fields = dict(kind="sweep", task=task, n=n, width=MAIN_WIDTH, devices=main_devices(n, cpus),
                allocator="default")
  fields.update(match)
  return find(results, **fields)


def _best(results: Results, task: str, n: int, key):
  """The row of (task, n), default allocator, with the largest `key(spec, out)`; its label."""
  rows = [(s, o) for s, o in results if s["kind"] == "sweep" and s["task"] == task
          and s["n"] == n and s["allocator"] == "default" and "rate_e2e" in o
          and key(s, o) is not None]
  if not rows:
    return None, None, None
  spec, out = max(rows, key=lambda so: key(*so))
  return spec, out, label(spec)


def task_targets(task: str, results: Results, peak: float | None, points: Sequence[int],
                 cpus: int) -> list[dict[str, Any]]:
  """The verdicts of issue 11's targets (and the earlier memory, compile and allocator ones)."""
  targets: list[dict[str, Any]] = []
  big = max(points)

  def ratio(text, n, what, need, show=lambda r: f"{r:.2f}×"):
    """`what(spec, out)`: the row's ratio to its reference; met when >= need."""
    now = _main(results, task, n, cpus)
    r = what(None, now) if now else None
    if r is None:
      return
    t = dict(target=text, now=show(r), now_ok=r >= need)
    spec, out, name = _best(results, task, n, what)
    if spec:
      t.update(variant=f"{show(what(spec, out))} ({name})", variant_ok=what(spec, out) >= need)
    targets.append(t)

  seq = find(results, kind="seq", task=task)
  if seq and seq.get("rate_plain_step"):
    r = seq["rate_step"] / seq["rate_plain_step"]
    scan = seq["rate_scan"] / seq["rate_plain_scan"]
    targets.append(dict(target=f"{task}: the single-run step ≥ 0.95× a plain JAX + Optax step",
                        now=f"{r:.2f}× (scan: {scan:.2f}×)", now_ok=r >= 0.95))
  if task == "lm" and 8 in points:
    ratio("lm N=8 ≥ 1.2× the PyTorch loop", 8, vs("torch"), 1.2)
    ratio("lm N=8 ≥ 55% of the matmul peak", 8, lambda s, o: row_mfu(o, peak), 0.55, _pct)
  if task == "digits" and 8 in points:
    ratio("digits N=8 ≥ 1.3× the plain jit(vmap(scan))", 8, vs("plain_vmap"), 1.3)
  if task == "digits" and 8 in points and big > 8:
    now8, now_big = _main(results, task, 8, cpus), _main(results, task, big, cpus)
    step8 = vs("plain_step")(None, now8) if now8 else None
    step_big = vs("plain_step")(None, now_big) if now_big else None
    if step8 and step_big:
      # Each row over the plain step loop timed with it: a point of that loop costs the same at
      # any N, so the quotient is the throughput ratio with the machine's load drift divided out.
      r = step_big / step8
      raw = rate(now_big) / rate(now8)
      targets.append(dict(target=f"digits N={big} ≥ 1.0× N=8 (each over its plain step loop)",
                          now=f"{r:.2f}× (raw {raw:.2f}×)", now_ok=r >= 1.0))
  if task == "classic" and 128 in points:
    ratio("classic N=128 ≥ 2× the plain jit(vmap(scan))", 128, vs("plain_vmap"), 2.0)
  gaps = [(gap(o), s) for s, o in results if s["kind"] == "sweep" and s["task"] == task
          and "rate_e2e" in o and gap(o) is not None]
  if gaps:
    worst, spec = max(gaps, key=lambda gs: gs[0])
    targets.append(dict(target=f"{task}: program vs e2e gap < 5% on every row",
                        now=f"worst {_pct(worst)} ({label(spec)})", now_ok=worst < 0.05))
  if task == "lm" and 32 in points:
    sliced, whole = _main(results, task, 32, cpus), _main(results, task, 32, cpus, width=0)
    if sliced:
      targets.append(dict(target=f"lm N=32 peak memory ≤ 1.5 GB (slices of {sliced['width']})",
                          now=f"{sliced['peak_rss_mb']:,.0f} MB (XLA "
                              f"{fmt((sliced['xla_bytes'] or 0) / 2**20)} MB)",
                          now_ok=sliced["peak_rss_mb"] <= 1536))
    ref = vs("plain_step")
    if sliced and whole and ref(None, sliced) and ref(None, whole):
      r = ref(None, sliced) / ref(None, whole)
      targets.append(dict(target="lm N=32 slicing keeps throughput (≥ 0.95× unsliced, each "
                                 "over its plain step loop)",
                          now=f"{r:.2f}× (unsliced: {whole['peak_rss_mb']:,.0f} MB)",
                          now_ok=r >= 0.95))
  one, many = _main(results, task, 1, cpus), _main(results, task, big, cpus)
  if one and many and big > 1:
    r = many["compile_s"] / one["compile_s"]
    t = dict(target=f"{task}: compile at N={big} ≤ 1.2× N=1",
             now=f"{r:.2f}× ({one['compile_s']:.1f} → {many['compile_s']:.1f} s)", now_ok=r <= 1.2)
    # N = 1 runs on one device: the same device count at N = big is the 1dev row.
    same = find(results, kind="sweep", task=task, n=big, width=MAIN_WIDTH, devices=1,
                allocator="default")
    if same:
      rs = same["compile_s"] / one["compile_s"]
      t.update(variant=f"{rs:.2f}× ({one['compile_s']:.1f} → {same['compile_s']:.1f} s, both "
                       "on 1 device)", variant_ok=rs <= 1.2)
    targets.append(t)
  for spec, out in results:
    if spec["kind"] != "sweep" or spec["task"] != task or spec["allocator"] == "default" or (
        "rate_e2e" not in out):
      continue
    ref_spec = {**spec, "allocator": "default"}
    ref = find(results, **ref_spec)
    if ref:
      r = rate(out) / rate(ref)
      plain = out.get("rate_plain_step"), ref.get("rate_plain_step")
      plain_r = plain[0] / plain[1] if all(plain) else None
      targets.append(dict(target=f"allocator {spec['allocator']} ({label(spec)}) vs default",
                          now=f"{r:.2f}× (its plain step loop {fmt(plain_r)}×; peak RSS "
                              f"{out['peak_rss_mb']:,.0f} vs {ref['peak_rss_mb']:,.0f} MB)",
                          now_ok=r > 1.0, words=("faster", "slower")))
  return targets
