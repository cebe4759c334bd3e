r"""Runs one config over variants x seeds, one process per run, and tabulates the final metrics.

Command line (every offline study goes through this, directly or from its script):

  python -m slot_ot_jax.training.sweep --config=configs/random_objects.py:sigma=1 \
      --grid attention=softmax,mesh --seeds=0,1,2 --jobs=2 \
      --workdir=workdirs/ro_sigma1 --out=benchmarks/results/ro_sigma1 \
      [--grid sigma=1,0.1 ...] [--override=eval_every_steps=2000 ...] \
      [--metrics=eval.rmse_over_sigma] [--compilation_cache=workdirs/jax_cache] [--nice=10]

* Runs: the product of the `--grid KEY=V1,V2` axes (repeatable) times `--seeds`. Each run is
  `python main.py --config=FILE:ARG,KEY=V,...,seed=S --workdir=ROOT/NAME --config.K=V ...`:
  the grid point and the seed are appended to the config file's argument string (use
  `--seed_in=override` for a config without a `seed` argument: `--config.seed=S` then),
  and every `--override=K=V` becomes `--config.K=V`. NAME is the grid point and the seed,
  e.g. `attention-mesh_seed-1`.
* Scheduling: `--jobs` processes at a time, in the order above; with more than one, every
  process is kept to one CPU thread (XLA, OpenMP, TF). `--compilation_cache=DIR` shares
  JAX's persistent compilation cache between the runs (the seeds of a variant compile the
  same programs).
* Resumable: a run whose workdir already holds final_metrics.json is not started again
  (`--rerun` starts it anyway); an unfinished one resumes from its checkpoints, as main.py
  does. Each run's output goes to <workdir>/log.txt (appended), its return code, wall time
  (start-up, compilation, training and evaluation), CPU time and the load average at its end
  to <workdir>/run_info.json.
* Failures: a run that exits non-zero is reported with the tail of its log; the others go
  on, and the command exits with status 1 at the end.
* Tables: <out>/<name>.md and <out>/<name>.json (name: `--name`, default "sweep"): one row
  per run (grid point, seed, wall time, metrics) and, per grid point, mean ± sample std
  (ddof 1) over the seeds with the per-seed values beside. `--metrics` picks the metrics
  (dotted paths into final_metrics.json, e.g. `eval.rmse_over_sigma`; a bare name is looked
  up under `eval.`); by default every number in final_metrics.json.

`--main="python my_trainer.py"` replaces `python main.py` (any command that takes the same
`--config`/`--workdir` flags and writes <workdir>/final_metrics.json).

Python API, for the scripts that keep their own analysis and table formats:

  from slot_ot_jax.training import sweep
  runs = [sweep.Run(name=f"{a}_{s}", workdir=f"workdirs/x/{a}_{s}", point={"attention": a},
                    seed=s, cmd=sweep.main_command(f"configs/shapes.py:attention={a},seed={s}",
                                                   f"workdirs/x/{a}_{s}"))
          for a in ("softmax", "mesh") for s in (0, 1)]
  outcomes = sweep.run_all(runs, jobs=2)
  sweep.require_success(outcomes)          # SystemExit naming the failed runs, if any.
  rows = sweep.collect(runs)               # final_metrics.json of each finished run.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from slot_ot_jax.training import host
from slot_ot_jax.training import launch
from slot_ot_jax.training import sweep_tables

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FINAL_METRICS = sweep_tables.FINAL_METRICS
RUN_INFO = sweep_tables.RUN_INFO
LOG = "log.txt"
TAIL_LINES = 20


@dataclasses.dataclass(frozen=True)
class Run:
  """One process of a sweep.

  Attributes:
    name: short unique name (table rows, messages).
    cmd: the command, e.g. `main_command(...)`.
    workdir: the run's own directory (created before the start; log.txt and run_info.json
      go there).
    point: the grid values of the run (seed excluded), for grouping and tables.
    seed: the run's seed.
    done_file: the file, relative to `workdir`, whose presence means the run is finished.
  """
  name: str
  cmd: tuple[str, ...]
  workdir: str
  point: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  seed: int = 0
  done_file: str = FINAL_METRICS

  def __post_init__(self):
    object.__setattr__(self, "cmd", tuple(self.cmd))

  @property
  def done(self) -> bool:
    return os.path.exists(os.path.join(self.workdir, self.done_file))


@dataclasses.dataclass
class Outcome:
  """What became of a run: status "done", "skipped" (finished before) or "failed"."""
  run: Run
  status: str
  returncode: int | None = None
  wall_s: float | None = None
  log_tail: str = ""


def repo_path(path: str) -> str:
  """A path inside the repository, relative to the working directory (so that the commands
  read `configs/x.py` when run from the repository root, and work from anywhere)."""
  return os.path.relpath(os.path.join(REPO, path))


def main_command(config: str, workdir: str, overrides: Sequence[str] = (),
                 extra: Sequence[str] = (), main: Sequence[str] | None = None) -> list[str]:
  """The command of one main.py run.

  Args:
    config: the --config value, `file.py:arg`.
    workdir: the --workdir value.
    overrides: `KEY=VALUE` strings, passed as `--config.KEY=VALUE` (after `extra`).
    extra: further flags, as they are.
    main: the program (default: this interpreter and the repository's main.py).
  """
  program = list(main) if main else [sys.executable, repo_path("main.py")]
  return [*program, f"--config={config}", f"--workdir={workdir}", *extra,
          *launch.override_flags(overrides)]


def sweep_env(jobs: int, compilation_cache: str | None = None,
              env: Mapping[str, str] | None = None) -> dict[str, str]:
  """The runs' environment: one CPU thread each when jobs > 1, and the shared cache dir."""
  env = launch.one_thread_env(env) if jobs > 1 else dict(os.environ if env is None else env)
  env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if compilation_cache:
    env.update(JAX_COMPILATION_CACHE_DIR=os.path.abspath(compilation_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def log_tail(path: str, lines: int = TAIL_LINES) -> str:
  """The last `lines` lines of a text file ('' if it does not exist)."""
  if not os.path.exists(path):
    return ""
  with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 200 * lines))
    text = f.read().decode("utf-8", "replace")
  return "\n".join(text.splitlines()[-lines:])


def run_all(runs: Sequence[Run], *, jobs: int = 1, env: Mapping[str, str] | None = None,
            compilation_cache: str | None = None, nice: int = 0, rerun: bool = False,
            cwd: str | None = None, poll_s: float = 0.5,
            echo: Callable[[str], None] = lambda s: print(s, flush=True)) -> list[Outcome]:
  """Runs the unfinished `runs`, `jobs` processes at a time, in their order.

  A run is finished when its `done_file` exists (unless `rerun`). Each process writes to
  <workdir>/log.txt (appended); when it ends, <workdir>/run_info.json records its return
  code, wall time, CPU time (user + system), the load average and the command. A failed run is
  reported through `echo` with the tail of
  its log and does not stop the others.

  Args:
    runs: the runs; their names must be unique.
    jobs: processes at a time; with more than one each gets one CPU thread (`env` is passed
      through `launch.one_thread_env`).
    env: base environment (default: os.environ).
    compilation_cache: directory of JAX's persistent compilation cache, shared by the runs.
    nice: niceness of the processes (0: as this one).
    rerun: start finished runs again.
    cwd: working directory of the processes (default: this one's, so that relative
      workdirs mean the same to the runner and to the runs).
    poll_s: how often to look for finished processes.
    echo: progress messages.

  Returns:
    One Outcome per run, in the order of `runs`.
  """
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f"Run names are not unique: {names}")
  if jobs < 1:
    raise ValueError(f"jobs must be >= 1, got {jobs}")
  env = sweep_env(jobs, compilation_cache, env)
  outcomes = {r.name: Outcome(r, "skipped") for r in runs if r.done and not rerun}
  pending = [r for r in runs if r.name not in outcomes]
  echo(f"{len(pending)} run(s) to do ({len(outcomes)} finished before), {jobs} at a time.")
  active = {}
  t_sweep = time.time()
  try:
    while pending or active:
      while pending and len(active) < jobs:
        run = pending.pop(0)
        os.makedirs(run.workdir, exist_ok=True)
        log = open(os.path.join(run.workdir, LOG), "a")
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(run.cmd)}\n")
        log.flush()
        cmd = (["nice", "-n", str(nice)] if nice else []) + list(run.cmd)
        echo(f"start {run.name}: {shlex.join(cmd)}")
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        active[run.name] = (run, proc, time.time(), log)
      time.sleep(poll_s)
      for name, (run, proc, start, log) in list(active.items()):
        cpu = _reap(proc)
        if proc.returncode is None:
          continue
        del active[name]
        log.close()
        wall = round(time.time() - start, 1)
        with open(os.path.join(run.workdir, RUN_INFO), "w") as f:
          json.dump({"returncode": proc.returncode, "wall_time_s": wall,
                     "cpu_time_s": None if cpu is None else round(cpu, 1), "jobs": jobs,
                     "load_average": [round(x, 2) for x in os.getloadavg()],
                     "host": host.host_info(), "cmd": list(run.cmd)}, f, indent=2)
        if proc.returncode == 0 and not run.done:  # Exited cleanly, e.g. after SIGTERM.
          outcome = Outcome(run, "failed", 0, wall, log_tail(os.path.join(run.workdir, LOG)))
          echo(f"UNFINISHED {run.name} after {wall:.0f} s: exit 0 without {run.done_file}")
        elif proc.returncode == 0:
          outcome = Outcome(run, "done", 0, wall)
          echo(f"done {run.name} in {wall:.0f} s")
        else:
          outcome = Outcome(run, "failed", proc.returncode, wall,
                            log_tail(os.path.join(run.workdir, LOG)))
          echo(f"FAILED {run.name} (exit {proc.returncode}) after {wall:.0f} s; end of "
               f"{os.path.join(run.workdir, LOG)}:\n{_indent(outcome.log_tail)}")
        outcomes[name] = outcome
  finally:  # Interrupted (Ctrl-C): stop the runs this call started.
    for _, proc, _, log in active.values():
      proc.terminate()
      proc.wait()
      log.close()
  failed = [o.run.name for o in outcomes.values() if o.status == "failed"]
  echo(f"Sweep took {time.time() - t_sweep:.0f} s"
       + (f"; failed: {', '.join(failed)}" if failed else "."))
  return [outcomes[r.name] for r in runs]


def _reap(proc: subprocess.Popen) -> float | None:
  """Sets proc.returncode if the process ended; returns its CPU time (user + system, with
  its own children) in seconds where the OS reports it, else None."""
  if hasattr(os, "wait4"):
    try:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:  # Already reaped.
      proc.poll()
      return None
    if pid:
      proc.returncode = os.waitstatus_to_exitcode(status)
      return usage.ru_utime + usage.ru_stime
    return None
  proc.poll()
  return None


def _indent(text: str) -> str:
  return "\n".join("    " + line for line in text.splitlines())


def require_success(outcomes: Iterable[Outcome]) -> None:
  """Raises SystemExit (status 1) naming the failed runs and their logs, if any."""
  failed = [o for o in outcomes if o.status == "failed"]
  if failed:
    raise SystemExit("Failed runs:\n" + "\n".join(
        f"  {o.run.name}: exit {o.returncode}, see {os.path.join(o.run.workdir, LOG)}"
        for o in failed))


# The tables (slot_ot_jax/training/sweep_tables.py), re-exported.
read_json = sweep_tables.read_json
wall_time = sweep_tables.wall_time
collect = sweep_tables.collect
flatten = sweep_tables.flatten
mean_std = sweep_tables.mean_std
summarise = sweep_tables.summarise
run_hosts = sweep_tables.run_hosts
markdown = sweep_tables.markdown
write_tables = sweep_tables.write_tables


# ------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------
def parse_grid(specs: Sequence[str]) -> list[dict[str, str]]:
  """["attention=softmax,mesh", "sigma=1,0.1"] -> the product, as a list of {key: value}."""
  axes = []
  for spec in specs:
    key, sep, values = spec.partition("=")
    values = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not values:
      raise ValueError(f"--grid {spec!r} is not KEY=V1,V2,...")
    axes.append([(key.strip(), v) for v in values])
  keys = [axis[0][0] for axis in axes]
  if len(set(keys)) != len(keys):
    raise ValueError(f"A grid key is given twice: {keys}")
  return [dict(combo) for combo in itertools.product(*axes)]


def run_name(point: Mapping[str, Any], seed: int) -> str:
  """Workdir name of a run, e.g. {"attention": "mesh", "sigma": "1"}, 0 ->
  "attention-mesh_sigma-1_seed-0"."""
  parts = [f"{k}-{v}" for k, v in point.items()] + [f"seed-{seed}"]
  return "_".join(p.replace("/", "-").replace(" ", "") for p in parts)


def plan(config: str, grid: Sequence[str], seeds: Sequence[int], workdir_root: str,
         overrides: Sequence[str] = (), seed_in: str = "arg",
         main: Sequence[str] | None = None) -> list[Run]:
  """The runs of the command line: grid points (in order) x seeds, each a main.py process."""
  file, _, arg = config.partition(":")
  runs = []
  for point in parse_grid(grid):
    for seed in seeds:
      items = [arg] if arg else []
      items += [f"{k}={v}" for k, v in point.items()]
      extra_overrides = list(overrides)
      if seed_in == "arg":
        items.append(f"seed={seed}")
      else:
        extra_overrides.append(f"seed={seed}")
      name = run_name(point, seed)
      workdir = os.path.join(workdir_root, name)
      cmd = main_command(f"{file}:{','.join(items)}" if items else file, workdir,
                         extra_overrides, main=main)
      runs.append(Run(name=name, cmd=cmd, workdir=workdir, point=point, seed=seed))
  return runs


def _seeds(text: str) -> list[int]:
  text = text.strip()
  if ":" in text:  # "0:5" = 0,1,2,3,4
    lo, hi = text.split(":")
    return list(range(int(lo), int(hi)))
  return [int(s) for s in text.split(",") if s.strip()]


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m slot_ot_jax.training.sweep",
      description="Runs a config over variants x seeds (one process per run) and writes "
                  "mean ± std tables.")
  p.add_argument("--config", required=True, help="config file with optional argument, "
                 "e.g. configs/random_objects.py:sigma=1")
  p.add_argument("--grid", action="append", default=[],
                 help="KEY=V1,V2,... appended to the config argument; repeatable (product)")
  p.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0:5")
  p.add_argument("--seed_in", choices=("arg", "override"), default="arg",
                 help="pass the seed as config argument seed=S or as --config.seed=S")
  p.add_argument("--override", action="append", default=[],
                 help="KEY=VALUE: --config.KEY=VALUE for every run (repeatable)")
  p.add_argument("--jobs", type=int, default=1, help="processes at a time (one thread each "
                 "when > 1)")
  p.add_argument("--workdir", required=True, help="root directory; one subdirectory per run")
  p.add_argument("--out", default=None, help="directory of the tables (default: --workdir)")
  p.add_argument("--name", default="sweep", help="file name stem of the tables")
  p.add_argument("--title", default=None, help="title of the markdown table")
  p.add_argument("--metrics", default="",
                 help="comma-separated metrics to tabulate (default: all numbers in "
                      "final_metrics.json), e.g. eval.rmse_over_sigma")
  p.add_argument("--compilation_cache", default="",
                 help="JAX persistent compilation cache dir shared by the runs")
  p.add_argument("--nice", type=int, default=0, help="niceness of the runs")
  p.add_argument("--rerun", action="store_true", help="also rerun finished runs")
  p.add_argument("--collect_only", action="store_true", help="start nothing; tabulate only")
  p.add_argument("--main", default="",
                 help="command replacing 'python main.py' (shell words), e.g. a fake trainer")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  p = build_parser()
  a = p.parse_args(argv)
  launch.check_overrides(p, a.override, True, "")
  try:
    runs = plan(a.config, a.grid, _seeds(a.seeds), a.workdir, a.override, a.seed_in,
                shlex.split(a.main) if a.main else None)
  except ValueError as e:
    p.error(str(e))
  if a.jobs < 1:
    p.error("--jobs must be >= 1")
  outcomes = [] if a.collect_only else run_all(
      runs, jobs=a.jobs, compilation_cache=a.compilation_cache or None, nice=a.nice,
      rerun=a.rerun)
  command = "python -m slot_ot_jax.training.sweep " + shlex.join(
      sys.argv[1:] if argv is None else list(argv))
  notes = [f"Command: `{command}`", "",
           f"Config: `{a.config}`; grid: {', '.join(a.grid) or 'none'}; seeds: {a.seeds}; "
           f"{a.jobs} process(es) at a time" + (", one CPU thread each" if a.jobs > 1 else "")
           + f" on {os.cpu_count()} cores. Wall time: the whole process (start-up, "
           "compilation, training, evaluation)."]
  if a.override:
    notes += ["", "Config changes in every run: " + ", ".join(f"`{o}`" for o in a.override)]
  metrics = [m.strip() for m in a.metrics.split(",") if m.strip()] or None
  md, js = write_tables(runs, a.out or a.workdir, a.name, metrics, outcomes,
                        a.title or f"Sweep of {a.config}", notes)
  with open(md) as f:
    print(f.read())
  print(f"Wrote {md} and {js}")
  failed = [o for o in outcomes if o.status == "failed"]
  if failed:
    print(f"{len(failed)} run(s) failed: {', '.join(o.run.name for o in failed)}",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
