r"""Reproduces Table 1 of the MESH paper (random objects detection) and writes a markdown table.

Runs the grid attention x sigma x seed through the sweep runner (`slot_ot_jax.training.sweep`),
each cell a `main.py` subprocess with its own workdir, at most --jobs at a time (single-threaded
XLA when several share the machine), then collects
`<workdir>/final_metrics.json` and writes the median RMSE/sigma over seeds next to the paper.

  python scripts/reproduce_random_objects.py                  # the grid, 2 processes
  python scripts/reproduce_random_objects.py --seeds=5        # 5 seeds everywhere (paper)
  python scripts/reproduce_random_objects.py --runlocal --attentions=mesh --sigmas=0.01
  python scripts/reproduce_random_objects.py --time_steps=200 # time each attention, predict
  # One setting changed in every run (its own workdirs and table), e.g. the reference's
  # MESH step (lr 8 over the whole cost) instead of the default 0.05 per cost entry:
  python scripts/reproduce_random_objects.py --attentions=mesh --sigmas=0.1,0.01 --seeds=3 \
      --override=model.slot_attention.mesh_lr_per_entry=False \
      --override=model.slot_attention.mesh_lr=8 --workdir_root=workdirs/random_objects_lr8 \
      --output=benchmarks/results/random_objects_mesh_lr8.md

By default every cell gets one seed, and SA, SA-SH and SA-MESH at sigma=0.01 get three.
Finished runs (with final_metrics.json) are reused, so an interrupted grid can be rerun;
unfinished ones resume from their checkpoints. `--collect_only` writes the table from the
finished runs under --workdir_root without starting any (cells without runs show "—").
"""
import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from slot_ot_jax.training import host  # pylint: disable=g-import-not-at-top,wrong-import-position
from slot_ot_jax.training import launch  # pylint: disable=g-import-not-at-top,wrong-import-position
from slot_ot_jax.training import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

PAPER = {  # Table 1: RMSE / sigma, median over 5 seeds.
    ("softmax", 1.0): 0.44, ("softmax", 0.1): 0.53, ("softmax", 0.01): 0.65,
    ("sinkhorn", 1.0): 0.27, ("sinkhorn", 0.1): 0.32, ("sinkhorn", 0.01): 0.41,
    ("emd", 1.0): 0.23, ("emd", 0.1): 0.52, ("emd", 0.01): 1.04,
    ("mesh", 1.0): 0.24, ("mesh", 0.1): 0.27, ("mesh", 0.01): 0.31,
}
NAMES = {"softmax": "SA", "sinkhorn": "SA-SH", "emd": "SA-EMD", "mesh": "SA-MESH"}
ATTENTIONS = ("softmax", "sinkhorn", "emd", "mesh")
SIGMAS = (1.0, 0.1, 0.01)
# Cells with at least three seeds by default.
THREE_SEEDS = {("softmax", 0.01), ("sinkhorn", 0.01), ("mesh", 0.01)}
# Slowest first, so that the parallel slots stay busy at the end of the grid.
COST_ORDER = {"emd": 0, "mesh": 1, "sinkhorn": 2, "softmax": 3}


def _env(jobs: int) -> dict:
  env = sweep.sweep_env(jobs)  # One core per process when several share the machine.
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env


def _config_arg(attention, sigma, seed, runlocal):
  arg = f"attention={attention},sigma={sigma:g},seed={seed}"
  return arg + (",runlocal=1" if runlocal else "")


def plan_runs(args):
  runs = []
  for attention in args.attentions:
    for sigma in args.sigmas:
      n = args.seeds or (3 if (attention, sigma) in THREE_SEEDS else 1)
      runs += [(attention, sigma, seed) for seed in range(n)]
  return sorted(runs, key=lambda r: (COST_ORDER[r[0]], r[2], r[1]))


def workdir_of(args, attention, sigma, seed):
  return os.path.join(args.workdir_root, f"{attention}_sigma{sigma:g}_seed{seed}")


def grid_runs(args) -> list:
  """The grid as sweep runs (slowest attention first), each a main.py process."""
  runs = []
  for attention, sigma, seed in plan_runs(args):
    workdir = workdir_of(args, attention, sigma, seed)
    config = (f"{sweep.repo_path(os.path.join('configs', 'random_objects.py'))}:"
              f"{_config_arg(attention, sigma, seed, args.runlocal)}")
    runs.append(sweep.Run(name=os.path.basename(workdir), workdir=workdir, seed=seed,
                          point={"attention": attention, "sigma": sigma},
                          cmd=sweep.main_command(config, workdir, args.override)))
  return runs


def run_grid(args) -> list:
  """Runs the unfinished cells through the sweep runner (--jobs at a time; --rerun: all).

  Each run's wall time and return code go to <workdir>/run_info.json; a failed run is
  reported with the end of its log and the others go on. Returns the runner's outcomes."""
  base = dict(os.environ)
  base.setdefault("JAX_PLATFORMS", "cpu")
  return sweep.run_all(grid_runs(args), jobs=args.jobs, env=base, rerun=args.rerun)


def _read(path):
  with open(path) as f:
    return json.load(f)


def write_table(args, grid_wall_s) -> str:
  results = collections.defaultdict(list)
  rows = []
  hosts = collections.Counter()  # host of each run, as the sweep runner recorded it
  for run in plan_runs(args):
    workdir = workdir_of(args, *run)
    metrics_path = os.path.join(workdir, "final_metrics.json")
    if not os.path.exists(metrics_path):
      continue
    metrics = _read(metrics_path)
    info_path = os.path.join(workdir, "run_info.json")
    info = _read(info_path) if os.path.exists(info_path) else {}
    wall = info.get("wall_time_s", metrics["wall_time_s"])
    hosts[host.describe(info["host"]) if "host" in info else "not recorded"] += 1
    value = metrics["eval"]["rmse_over_sigma"]
    results[run[:2]].append(value)
    rows.append((*run, value, metrics["step"], wall))

  lines = ["# Random objects detection (MESH paper, Table 1)", "",
           "RMSE / sigma on the held-out set (6,400 examples; 640 with --runlocal), median over "
           "seeds (lower is better; "
           "predicting zeros scores 1.0). Paper: median over 5 seeds.", "",
           f"- command: `python scripts/reproduce_random_objects.py "
           f"{' '.join(sys.argv[1:]).replace(REPO + os.sep, '')}`".rstrip(),
           f"- config changes in every run: {', '.join(args.override)}" if args.override else None,
           f"- machine: {platform.machine()} CPU, {os.cpu_count()} cores, "
           f"{args.jobs} parallel process(es)",
           "- host of the runs: " + "; ".join(f"{h} ({n} run{'s' * (n > 1)})"
                                              for h, n in sorted(hosts.items())),
           ("- collected from finished runs (--collect_only); " if args.collect_only else
            f"- wall time of this invocation: {grid_wall_s / 3600:.2f} h; ")
           + f"sum over runs: {sum(r[-1] for r in rows) / 3600:.2f} h",
           "- runlocal (smoke-test sizes, not comparable to the paper)" if args.runlocal else None,
           "", "| model | " + " | ".join(f"σ = {s:g}" for s in args.sigmas) + " |",
           "|---|" + "---|" * len(args.sigmas)]
  for attention in args.attentions:
    cells = []
    for sigma in args.sigmas:
      values, paper = results.get((attention, sigma)), PAPER.get((attention, sigma))
      if not values:
        cells.append(f"— (paper {paper:.2f})")
        continue
      med = statistics.median(values)
      flag = " †" if abs(med - paper) > 0.05 else ""
      spread = f" [{min(values):.2f}-{max(values):.2f}]" if len(values) > 1 else ""
      cells.append(f"{med:.2f}{spread} (paper {paper:.2f}, n={len(values)}){flag}")
    lines.append(f"| {NAMES[attention]} | " + " | ".join(cells) + " |")
  lines += ["", "Cells: median [min-max] over the n seeds. † median more than 0.05 from the paper.",
            "",
            "| model | σ | seed | RMSE/σ | steps | wall time (min) |", "|---|---|---|---|---|---|"]
  for attention, sigma, seed, value, step, wall in rows:
    lines.append(f"| {NAMES[attention]} | {sigma:g} | {seed} | {value:.3f} | {step} | "
                 f"{wall / 60:.1f} |")
  text = "\n".join(line for line in lines if line is not None) + "\n"
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w") as f:
    f.write(text)
  return text


# ------------------------------------------------------------------------------------------
# Timing: --time_steps N runs N train steps of each attention at full size in a subprocess
# with the grid's thread settings and predicts the grid's wall time.
# ------------------------------------------------------------------------------------------
def _time_one(attention: str, steps: int) -> None:
  sys.path.insert(0, REPO)
  import jax  # pylint: disable=g-import-not-at-top

  from configs import random_objects as ro_config  # pylint: disable=g-import-not-at-top
  from slot_ot_jax import tasks  # pylint: disable=g-import-not-at-top
  from slot_ot_jax.training import train  # pylint: disable=g-import-not-at-top
  config = ro_config.get_config(f"attention={attention},sigma=0.01")
  task = tasks.get_task(config)
  trainer = train.Trainer(config, task, jax.devices())
  state = trainer.create_state()
  batches = task.train_batches(0)
  t0 = time.time()
  for _ in range(5):  # Compile and warm up.
    state, _, finite = trainer.train_step(state, trainer.global_batch(next(batches)))
  finite.block_until_ready()
  t1 = time.time()
  for _ in range(steps):
    state, _, finite = trainer.train_step(state, trainer.global_batch(next(batches)))
  finite.block_until_ready()
  t2 = time.time()
  trainer.evaluate(state)  # Compile.
  t3 = time.time()
  trainer.evaluate(state)
  t4 = time.time()
  print(json.dumps({"attention": attention, "step_ms": 1000 * (t2 - t1) / steps,
                    "compile_s": t1 - t0 + t3 - t2, "eval_s": t4 - t3}))


def time_attentions(args) -> None:
  env = _env(args.jobs)
  timings = {}
  for attention in args.attentions:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--_time_one={attention}",
                          f"--time_steps={args.time_steps}"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    timings[attention] = json.loads(out.strip().splitlines()[-1])
    t = timings[attention]
    print(f"{NAMES[attention]:8s} {t['step_ms']:7.1f} ms/step, compile {t['compile_s']:.0f} s, "
          f"eval (6,400) {t['eval_s']:.1f} s", flush=True)
  total = 0.0
  for attention, _, _ in plan_runs(args):
    t = timings.get(attention)
    if t:  # 20k steps + 5 evaluations + compilation.
      total += 20_000 * t["step_ms"] / 1000 + 5 * t["eval_s"] + t["compile_s"]
  print(f"Predicted grid wall time with {args.jobs} process(es): "
        f"{total / args.jobs / 3600:.1f} h ({len(plan_runs(args))} runs, "
        f"load average now {os.getloadavg()[0]:.1f}).")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--jobs", type=int, default=2, help="parallel processes")
  parser.add_argument("--workdir_root", default=os.path.join(REPO, "workdirs", "random_objects"))
  parser.add_argument("--output", default=None,
                      help="markdown table (default benchmarks/results/random_objects_table1.md"
                           ", or <workdir_root>/table_runlocal.md with --runlocal)")
  parser.add_argument("--attentions", default=",".join(ATTENTIONS))
  parser.add_argument("--sigmas", default=",".join(f"{s:g}" for s in SIGMAS))
  parser.add_argument("--seeds", type=int, default=0,
                      help="seeds per cell (default: 3 for SA, SA-SH, SA-MESH at 0.01, else 1)")
  parser.add_argument("--runlocal", action="store_true", help="one-minute smoke runs")
  parser.add_argument("--rerun", action="store_true", help="rerun finished cells")
  parser.add_argument("--collect_only", action="store_true",
                      help="only write the table from the finished runs; start none")
  launch.add_override_argument(parser, "its own --workdir_root and --output")
  parser.add_argument("--time_steps", type=int, default=0,
                      help="only time this many steps of each attention and predict")
  parser.add_argument("--_time_one", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._time_one:  # pylint: disable=protected-access
    return _time_one(args._time_one, args.time_steps)  # pylint: disable=protected-access
  args.attentions = [a.strip() for a in args.attentions.split(",") if a.strip()]
  unknown = sorted(set(args.attentions) - set(ATTENTIONS))
  if unknown:
    parser.error(f"unknown attention(s) {unknown}; valid: {', '.join(ATTENTIONS)}")
  args.sigmas = [float(s) for s in args.sigmas.split(",") if s.strip()]
  unknown = [s for s in args.sigmas if s not in SIGMAS]
  if unknown:
    parser.error(f"sigma(s) {unknown} are not in Table 1; valid: {SIGMAS}")
  launch.check_overrides(
      parser, args.override,
      args.workdir_root != parser.get_default("workdir_root") and args.output is not None,
      "--workdir_root and --output")
  if args.output is None:
    args.output = (os.path.join(args.workdir_root, "table_runlocal.md") if args.runlocal
                   else os.path.join(REPO, "benchmarks", "results", "random_objects_table1.md"))
  if args.time_steps:
    return time_attentions(args)
  t0 = time.time()
  if args.collect_only:
    missing = [r for r in plan_runs(args) if not os.path.exists(
        os.path.join(workdir_of(args, *r), "final_metrics.json"))]
    if missing:
      print(f"{len(missing)} run(s) of the grid not finished, left out: {missing}")
    outcomes = []
  else:
    outcomes = run_grid(args)
  print(write_table(args, time.time() - t0))
  print(f"Table written to {args.output}")
  sweep.require_success(outcomes)


if __name__ == "__main__":
  main()
