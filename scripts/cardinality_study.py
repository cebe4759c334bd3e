r"""Offline cardinality study (003, Krimmel et al.) on shapes: 4 normalisations x seeds.

  python scripts/cardinality_study.py [--steps=3000 --seeds=0,1,2 --jobs=2 \
      --workdir=workdirs/cardinality_shapes --out=benchmarks/results]

For every update normalisation (weighted mean = baseline, layer norm, weighted sum 1/N, scalar
batch norm) and seed, trains `configs/cardinality_shapes.py` (shapes/16x16: 1-3 sprites, 4
slots, 3 iterations), then evaluates the checkpoint as `main.py --config.mode=eval` does (5
iterations, shapes/16x16_6 test split: 1,280 scenes of 1-6 sprites), which runs the sweep of
`slot_ot_jax/evaluation/cardinality.py` over slot counts 3..10 x object counts. One process per run
(training and sweep share its start-up; JAX's persistent compilation cache in
<workdir>/jax_cache is shared by the runs), launched by the sweep runner
`slot_ot_jax.training.sweep`, --jobs at a time (one CPU thread each when > 1; log in
<run>/log.txt). A run whose workdir already holds final_metrics.json (training) or
cardinality/sweep.json (sweep) does not repeat that part.

Writes <out>/cardinality_shapes.md (setting, per-run totals, per-normalisation tables of
FG-ARI / ARI / FG-mIoU / loss by slot count and by object count, wall times, the command),
<out>/cardinality_shapes.json (every sweep cell of every run) and the figures
<out>/cardinality_shapes.png (003 Fig. 1 layout: mean over seeds, min-max band) and
<out>/cardinality_shapes_loss.png (003 Fig. 6 layout, reconstruction loss).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from slot_ot_jax.training import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

NORMS = ("weighted_mean", "layer_norm", "weighted_sum", "batch_norm")


def run_args(norm, seed, a, workdir=None):
  """main.py arguments of one training run (add --config.mode=eval for its sweep)."""
  return [f"--config={sweep.repo_path('configs/cardinality_shapes.py')}:update_norm={norm},"
          f"seed={seed},steps={a.steps}",
          f"--workdir={os.path.join(workdir or a.workdir, f'{norm}_{seed}')}"] + (
              [f"--config.data.data_dir={a.data_dir}"] if a.data_dir else [])


def _worker(runs, a):
  """The runs [(norm, seed)], one after the other, in this process: `main.py`'s training,
  then its `--config.mode=eval` sweep (the same two calls). The seeds share the start-up
  and, through JAX's persistent compilation cache, the compilations. Wall times of each part
  go to <run>/process_wall_s.json."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  from configs import cardinality_shapes  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.training import train  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  jax.config.update("jax_compilation_cache_dir", os.path.join(a.workdir, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  for norm, seed in runs:
    wd = os.path.join(a.workdir, f"{norm}_{seed}")
    walls = {}
    for mode in ("train", "eval"):
      done = "final_metrics.json" if mode == "train" else os.path.join("cardinality",
                                                                       "sweep.json")
      if os.path.exists(os.path.join(wd, done)) or (mode == "eval" and a.stage == "train"):
        continue
      config = cardinality_shapes.get_config(f"update_norm={norm},seed={seed},steps={a.steps}")
      with config.unlocked():
        config.mode = mode
        # The end-of-training evaluation is not used here: keep it to one batch, no images.
        config.data.eval_split = "validation[:16]"
        config.images.num_examples = 0
        if a.data_dir:
          config.data.data_dir = a.data_dir
      start = time.time()
      train.train_and_evaluate(config, wd)
      walls[mode] = round(time.time() - start, 1)
      print(f"{norm} seed {seed} {mode}: {walls[mode]:.0f} s", flush=True)
    path = os.path.join(wd, "process_wall_s.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    json.dump({**old, **walls}, open(path, "w"), indent=2)


def study_runs(norms, seeds, a) -> list:
  """One sweep run per (normalisation, seed): this script's `--worker=norm:seed` process
  (training, then the sweep unless --stage=train), finished when its sweep.json exists
  (final_metrics.json with --stage=train)."""
  done = "final_metrics.json" if a.stage == "train" else os.path.join("cardinality",
                                                                        "sweep.json")
  return [sweep.Run(
      name=f"{norm}_{seed}", workdir=os.path.join(a.workdir, f"{norm}_{seed}"),
      point={"update_norm": norm}, seed=seed, done_file=done,
      cmd=[sys.executable, os.path.abspath(__file__), f"--worker={norm}:{seed}",
           f"--steps={a.steps}", f"--workdir={a.workdir}", f"--stage={a.stage}"]
      + ([f"--data_dir={a.data_dir}"] if a.data_dir else []))
          for norm in norms for seed in seeds]


def _run_all(norms, seeds, a):
  """Trains and sweeps every run through the sweep runner, --jobs processes at a time (one
  CPU thread each when > 1); the failed ones are reported and the others go on."""
  return sweep.run_all(study_runs(norms, seeds, a), jobs=a.jobs)


LABELS = {"weighted_mean": "weighted mean (baseline)", "layer_norm": "layer norm",
          "weighted_sum": "weighted sum 1/N", "batch_norm": "batch norm"}
TRAIN_SLOTS, TRAIN_MAX_OBJECTS = 4, 3


def _stats(values):
  v = np.asarray([x for x in values if x is not None], float)
  if not v.size:
    return float("nan"), float("nan")
  return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)  # Sample std.


def _pm(values, scale=100.0, digits=1):
  """"mean ± std" over the seeds; the value alone for a single seed."""
  mean, std = _stats(values)
  if len([v for v in values if v is not None]) == 1:
    return f"{scale * mean:.{digits}f}"
  return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def write_report(runs, norms, seeds, a):
  from configs import cardinality_shapes  # pylint: disable=g-import-not-at-top
  """Markdown table, JSON of every sweep and the two figures (see the module docstring)."""
  from slot_ot_jax.evaluation import cardinality  # pylint: disable=g-import-not-at-top
  tables, walls, finals = {}, {}, {}
  missing = [r for r in runs if not os.path.exists(
      os.path.join(a.workdir, f"{r[0]}_{r[1]}", "cardinality", "sweep.json"))]
  runs = [r for r in runs if r not in missing]
  norms = [n for n in norms if any(r[0] == n for r in runs)]
  seeds_of = {n: [s for m, s in runs if m == n] for n in norms}
  for norm, seed in runs:
    wd = os.path.join(a.workdir, f"{norm}_{seed}")
    tables[norm, seed] = json.load(open(os.path.join(wd, "cardinality", "sweep.json")))
    walls_path = os.path.join(wd, "process_wall_s.json")
    walls[norm, seed] = json.load(open(walls_path)) if os.path.exists(walls_path) else {}
    finals[norm, seed] = json.load(open(os.path.join(wd, "final_metrics.json")))
  first = tables[runs[0]]
  ks, ns = first["slot_counts"], first["object_counts"]
  by_norm = {LABELS[n]: [tables[n, s] for s in seeds_of[n]] for n in norms}
  os.makedirs(a.out, exist_ok=True)
  stem = os.path.join(a.out, "cardinality_shapes")
  cardinality.plot_sweeps(by_norm, stem + ".png", train_max_objects=TRAIN_MAX_OBJECTS,
                          eval_slots=TRAIN_SLOTS, metric_names=("fg_ari", "ari"),
                          title=f"shapes 16x16: trained with <= {TRAIN_MAX_OBJECTS} objects, "
                                f"{TRAIN_SLOTS} slots (seeds: mean line, min-max band)")
  cardinality.plot_sweeps(by_norm, stem + "_loss.png", train_max_objects=TRAIN_MAX_OBJECTS,
                          eval_slots=TRAIN_SLOTS, metric_names=("fg_miou", "loss"),
                          title="FG-mIoU and reconstruction loss (same runs)")
  with open(stem + ".json", "w") as f:
    json.dump({"steps": a.steps, "seeds": seeds, "norms": norms,
               "runs": [{"update_norm": n, "seed": s, "wall_s": walls[n, s],
                         "train_time_s": finals[n, s].get("train_time_s"),
                         "sweep": tables[n, s]} for n, s in runs]}, f, indent=2)

  def vals(norm, metric, k, max_objects=None):  # One value per seed.
    return [cardinality.pooled(tables[norm, s], metric, k, max_objects) for s in seeds_of[norm]]

  pooled = cardinality.pooled
  kmax = ks[-1]
  lines = [
      "# Cardinality generalisation on shapes (003, Krimmel et al.; CPU)", "",
      f"Training: `configs/cardinality_shapes.py`, shapes/16x16 (1-{TRAIN_MAX_OBJECTS} sprites "
      f"per image), {TRAIN_SLOTS} slots, 3 iterations, {a.steps} steps at batch 16 "
      f"({a.steps * 16 / 5000:.1f} epochs of the 5,000 images); model: 3x3 convs of 16 "
      "channels, full-resolution broadcast decoder, slot size 32, slot MLP 64; Adam "
      f"{cardinality_shapes.get_config().optimizer.learning_rate:g}, "
      "warm-up 10%, learning rate halved once over the run, clipping 0.1. Evaluation (003's "
      f"protocol): 5 iterations, shapes/16x16_6 test split ({first['num_scenes']} scenes of "
      f"1-6 sprites of the same sizes), slot counts {', '.join(map(str, ks))}. Seeds run: "
      + "; ".join(f"{LABELS[n]} {', '.join(map(str, seeds_of[n]))}" for n in norms)
      + "; no finished run is left out (003 drops runs that split scenes "
      "spatially; we keep them all). Values are mean ± sample standard deviation (ddof 1) "
      "over the seeds, in %; a single seed is shown alone."
      + (" Not run (no sweep in the workdir): "
         + ", ".join(f"{LABELS[n]} seed {s}" for n, s in missing) + "." if missing else ""), "",
      f"## FG-ARI against the slot count (trained with {TRAIN_SLOTS})", "",
      f"Scenes with <= {TRAIN_MAX_OBJECTS} objects (the training range, as 003's CLEVR6):", "",
      "| normalisation | " + " | ".join(f"K={k}" for k in ks) + " |",
      "| --- |" + " --- |" * len(ks)]
  for norm in norms:
    lines.append(f"| {LABELS[norm]} | " + " | ".join(
        _pm(vals(norm, "fg_ari", k, TRAIN_MAX_OBJECTS))
        for k in ks) + " |")
  lines += ["", "All scenes (1-6 objects, as 003's CLEVR10):", "",
            "| normalisation | " + " | ".join(f"K={k}" for k in ks) + " |",
            "| --- |" + " --- |" * len(ks)]
  for norm in norms:
    lines.append(f"| {LABELS[norm]} | " + " | ".join(
        _pm(vals(norm, "fg_ari", k)) for k in ks) + " |")
  lines += ["", f"Change of FG-ARI from {TRAIN_SLOTS} to {kmax} slots (all scenes; "
            "negative = degrades with extra slots), and ARI (background included):", "",
            f"| normalisation | FG-ARI K={TRAIN_SLOTS} | FG-ARI K={kmax} | change | "
            f"ARI K={TRAIN_SLOTS} | ARI K={kmax} | loss K={TRAIN_SLOTS} | loss K={kmax} |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for norm in norms:
    f4, fk = vals(norm, "fg_ari", TRAIN_SLOTS), vals(norm, "fg_ari", kmax)
    lines.append(
        f"| {LABELS[norm]} | {_pm(f4)} | {_pm(fk)} | "
        f"{_pm([b - c for b, c in zip(fk, f4)])} | "
        f"{_pm(vals(norm, 'ari', TRAIN_SLOTS))} | {_pm(vals(norm, 'ari', kmax))} | "
        f"{_pm(vals(norm, 'loss', TRAIN_SLOTS), 1.0, 4)} | "
        f"{_pm(vals(norm, 'loss', kmax), 1.0, 4)} |")
  for k in (TRAIN_SLOTS, kmax):
    lines += ["", f"## FG-ARI against the object count, {k} slots", "",
              "| normalisation | " + " | ".join(f"n={n}" for n in ns) + " |",
              "| --- |" + " --- |" * len(ns)]
    for norm in norms:
      lines.append(f"| {LABELS[norm]} | " + " | ".join(
          _pm([cardinality.cell(tables[norm, s], k, n).get("fg_ari")
               for s in seeds_of[norm]]) for n in ns) + " |")
  lines += ["", "## Runs", "",
            f"| normalisation | seed | FG-ARI K={TRAIN_SLOTS}, <= {TRAIN_MAX_OBJECTS} objects | "
            f"FG-ARI K={TRAIN_SLOTS}, all | FG-ARI K={kmax}, all | training process (s) | "
            "sweep (s) |", "| --- | --- | --- | --- | --- | --- | --- |"]
  for norm, seed in sorted(runs, key=lambda r: (norms.index(r[0]), r[1])):
    t, w = tables[norm, seed], walls[norm, seed]
    lines.append(
        f"| {LABELS[norm]} | {seed} | "
        f"{100 * pooled(t, 'fg_ari', TRAIN_SLOTS, TRAIN_MAX_OBJECTS):.1f} | "
        f"{100 * pooled(t, 'fg_ari', TRAIN_SLOTS):.1f} | {100 * pooled(t, 'fg_ari', kmax):.1f} | "
        f"{w.get('train', float('nan')):.0f} | {w.get('eval', float('nan')):.0f} |")
  lines += ["", "Scenes per object count: " + ", ".join(
      f"{n}: {cardinality.cell(first, ks[0], n)['num_scenes']}" for n in ns)
            + ".", "",
            "Figures: `cardinality_shapes.png` (FG-ARI and ARI; columns as 003 Fig. 1: against "
            f"the slot count on scenes with <= {TRAIN_MAX_OBJECTS} objects, on all scenes, and "
            f"against the object count with {TRAIN_SLOTS} slots), `cardinality_shapes_loss.png` "
            "(FG-mIoU and reconstruction loss, as 003 Fig. 6). Every cell of every run: "
            "`cardinality_shapes.json`.", "",
            f"Wall times: {a.jobs} processes at a time, one CPU thread each, on a 2-core machine "
            "(other work on the machine inflates them); a process holds one "
            "run's training (start-up, compilation, training, the final evaluation) and then "
            "its sweep.", "", "Reproduce:", "", "```",
            f"python scripts/cardinality_study.py --steps={a.steps} --seeds={a.seeds} "
            f"--jobs={a.jobs}", "```", "", "One run and its sweep by hand:", "", "```",
            "python main.py " + " ".join(run_args(norms[0], seeds[0], a,
                                              workdir="workdirs/cardinality_shapes")),
            "python main.py " + " ".join(run_args(norms[0], seeds[0], a,
                                              workdir="workdirs/cardinality_shapes"))
            + " --config.mode=eval", "```", ""]
  with open(stem + ".md", "w") as f:
    f.write("\n".join(lines))
  print(f"Wrote {stem}.md, {stem}.json, {stem}.png, {stem}_loss.png")


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--norms", default=",".join(NORMS))
  p.add_argument("--data_dir", default=None)
  p.add_argument("--workdir", default="workdirs/cardinality_shapes")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--jobs", type=int, default=2, help="processes at a time (one thread each)")
  p.add_argument("--stage", default="all", choices=("train", "all", "report"),
                 help="train: training runs only; all: also the sweeps and the report; "
                      "report: only the report, of the runs whose sweep is done")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)  # A norm: its runs.
  a = p.parse_args()
  seeds = [int(s) for s in a.seeds.split(",")]
  norms = a.norms.split(",")
  if a.worker:  # "norm" (its --seeds) or "norm:seed,norm:seed,...".
    _worker([(r.split(":")[0], int(r.split(":")[1])) for r in a.worker.split(",")]
            if ":" in a.worker else [(a.worker, seed) for seed in seeds], a)
    return
  runs = [(norm, seed) for norm in norms for seed in seeds]
  outcomes = _run_all(norms, seeds, a) if a.stage != "report" else []
  if a.stage != "train":
    write_report(runs, norms, seeds, a)  # Of the runs whose sweep is done.
  sweep.require_success(outcomes)


if __name__ == "__main__":
  main()
