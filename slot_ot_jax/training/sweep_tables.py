"""The tables of a sweep: final metrics of its runs, mean ± std per grid point, markdown/JSON.

Split from `slot_ot_jax.training.sweep`, which re-exports every public name here (scripts
call them as `sweep.collect`, `sweep.write_tables`, ...). `runs` are `sweep.Run`s and
`outcomes` `sweep.Outcome`s (anything with the same attributes).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import statistics
from typing import Any, Mapping, Sequence

from slot_ot_jax.training import host

FINAL_METRICS = "final_metrics.json"
RUN_INFO = "run_info.json"


def read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def wall_time(workdir: str) -> float | None:
  """A run's process wall time in seconds: run_info.json's (finished or failed), else the one
  an older launcher put into final_metrics.json (`process_wall_s`), else the trainer's own;
  None for a run never started."""
  info = os.path.join(workdir, RUN_INFO)
  if os.path.exists(info):
    wall = read_json(info).get("wall_time_s")
    if wall is not None:
      return wall
  final = os.path.join(workdir, FINAL_METRICS)
  if os.path.exists(final):
    metrics = read_json(final)
    return metrics.get("process_wall_s", metrics.get("wall_time_s"))
  return None


def collect(runs: Sequence[Any], file: str = FINAL_METRICS) -> dict[str, dict]:
  """{run name: content of <workdir>/<file>} of the runs that have it."""
  return {r.name: read_json(os.path.join(r.workdir, file)) for r in runs
          if os.path.exists(os.path.join(r.workdir, file))}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """The numbers of a nested dict by dotted path ({"eval": {"loss": 1}} -> {"eval.loss": 1});
  booleans and strings are left out."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      flat[path] = float(value)
  return flat


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof 1; nan for a single value)."""
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return math.nan, math.nan
  return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def _fmt(x: float | None, digits: int = 4) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "—"
  return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.0f}"


def summarise(runs: Sequence[Any], metrics: Sequence[str] | None = None,
              outcomes: Sequence[Any] = ()) -> dict:
  """Per-run rows and per-grid-point statistics of the runs' final metrics.

  Args:
    runs: the runs (the finished ones are read; the others are listed as not finished).
    metrics: dotted paths into final_metrics.json; a name without a dot that is not a top
      level number is looked up under `eval.`. Default: every number of the first finished run.
    outcomes: from `run_all`, for the status of runs that did not finish.

  Returns:
    {"metrics": [...], "runs": [{"name", "point", "seed", "status", "wall_s", "metrics"}],
     "groups": [{"point", "seeds", "n", "metrics": {m: {"mean", "std", "values"}}}],
     "hosts": [one line per distinct host the runs ran on]}
    with std the sample standard deviation (ddof 1), null for one seed.
  """
  status = {o.run.name: o.status for o in outcomes}
  finals = collect(runs)
  flat = {name: flatten(m) for name, m in finals.items()}
  if metrics:
    keys = []
    for m in metrics:
      if "." not in m and not any(m in f for f in flat.values()):
        m = f"eval.{m}"
      keys.append(m)
  else:
    keys = list(next(iter(flat.values()), {}))
  rows = []
  for r in runs:
    values = flat.get(r.name)
    rows.append({"name": r.name, "point": dict(r.point), "seed": r.seed,
                 "status": ("finished" if values is not None
                            else status.get(r.name, "not finished")),
                 "wall_s": wall_time(r.workdir),
                 "metrics": {k: values.get(k) for k in keys} if values is not None else {}})
  groups = []
  for point, members in itertools.groupby(
      sorted(rows, key=lambda row: _order(runs, row["point"])), key=lambda row: row["point"]):
    members = [m for m in members if m["status"] == "finished"]
    stats = {}
    for k in keys:
      values = [m["metrics"].get(k) for m in members]
      mean, std = mean_std(values)
      stats[k] = {"mean": None if math.isnan(mean) else mean,
                  "std": None if math.isnan(std) else std, "values": values}
    groups.append({"point": point, "seeds": [m["seed"] for m in members],
                   "n": len(members), "metrics": stats})
  return {"metrics": keys, "runs": rows, "groups": groups, "hosts": run_hosts(runs)}


def run_hosts(runs: Sequence[Any]) -> list[str]:
  """The distinct hosts (`host.describe`) the runs' processes ran on, from run_info.json."""
  hosts = []
  for r in runs:
    path = os.path.join(r.workdir, RUN_INFO)
    info = read_json(path).get("host") if os.path.exists(path) else None
    if info and host.describe(info) not in hosts:
      hosts.append(host.describe(info))
  return hosts


def _order(runs: Sequence[Any], point: Mapping[str, Any]) -> int:
  """Index of the first run at `point` (groups keep the order of the runs)."""
  return next(i for i, r in enumerate(runs) if dict(r.point) == dict(point))


def _point_label(point: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={v}" for k, v in point.items()) or "(all)"


def markdown(summary: dict, title: str = "Sweep", notes: Sequence[str] = ()) -> str:
  """The summary as markdown: mean ± std table, then the per-run table."""
  keys = summary["metrics"]
  lines = [f"# {title}", "", *notes, *([""] if notes else []),
           "Mean ± sample std (ddof 1) over the finished seeds, per-seed values in brackets "
           "(seed order as in the n column).", "",
           *[f"Host: {h}." for h in summary.get("hosts", [])],
           *([""] if summary.get("hosts") else []),
           "| grid point | n (seeds) | " + " | ".join(keys) + " |",
           "| --- | --- |" + " --- |" * len(keys)]
  for g in summary["groups"]:
    cells = []
    for k in keys:
      s = g["metrics"][k]
      if s["mean"] is None:
        cells.append("—")
        continue
      spread = f" ± {_fmt(s['std'])}" if s["std"] is not None else ""
      per_seed = ", ".join(_fmt(v) for v in s["values"])
      cells.append(f"{_fmt(s['mean'])}{spread} [{per_seed}]")
    seeds = ",".join(map(str, g["seeds"]))
    lines.append(f"| {_point_label(g['point'])} | {g['n']} ({seeds}) | " + " | ".join(cells)
                 + " |")
  lines += ["", "| run | seed | status | wall time (s) | " + " | ".join(keys) + " |",
            "| --- | --- | --- | --- |" + " --- |" * len(keys)]
  for row in summary["runs"]:
    lines.append(f"| {row['name']} | {row['seed']} | {row['status']} | "
                 f"{_fmt(row['wall_s'], 5)} | "
                 + " | ".join(_fmt(row["metrics"].get(k)) for k in keys) + " |")
  return "\n".join(lines) + "\n"


def write_tables(runs: Sequence[Any], out: str, name: str = "sweep",
                 metrics: Sequence[str] | None = None, outcomes: Sequence[Any] = (),
                 title: str = "Sweep", notes: Sequence[str] = ()) -> tuple[str, str]:
  """Writes <out>/<name>.md and <out>/<name>.json (see `summarise`); returns both paths."""
  summary = summarise(runs, metrics, outcomes)
  os.makedirs(out, exist_ok=True)
  md, js = os.path.join(out, f"{name}.md"), os.path.join(out, f"{name}.json")
  with open(md, "w") as f:
    f.write(markdown(summary, title, notes))
  with open(js, "w") as f:
    json.dump({"title": title, "notes": list(notes), **summary}, f, indent=2)
  return md, js
