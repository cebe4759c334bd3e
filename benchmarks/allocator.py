"""Our training step with and without `allocator.retain_freed_memory()` (not a test).

  python benchmarks/allocator.py [--model=shapes] [--attention=softmax] [--batch=0]
      [--steps=15] [--pairs=2]

The setting is process-wide and cannot be undone, so each measurement is its own process
(`--child`): the model of benchmarks/train_speed.py, one XLA thread, 2 warm-up steps, then
--steps steps; the median step, and per step the user and system CPU time, the minor page
faults (getrusage) and the peak resident memory. --pairs pairs, the two settings alternating
(default first). Prints the host.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def child(a) -> None:
  import train_speed  # pylint: disable=g-import-not-at-top
  train_speed._limit_threads(1)  # pylint: disable=protected-access
  from slot_ot_jax.training import allocator  # pylint: disable=g-import-not-at-top
  retained = allocator.retain_freed_memory() if a.retain else False
  ours = train_speed.Ours(train_speed.model_setup(a.model, a.attention, a.batch))
  for _ in range(2):
    ours.step()
  before, times = resource.getrusage(resource.RUSAGE_SELF), []
  for _ in range(a.steps):
    start = time.perf_counter()
    ours.step()
    times.append(time.perf_counter() - start)
  after = resource.getrusage(resource.RUSAGE_SELF)
  n = a.steps
  print(json.dumps(dict(
      retained=retained, step_ms=1e3 * statistics.median(times),
      user_ms=1e3 * (after.ru_utime - before.ru_utime) / n,
      sys_ms=1e3 * (after.ru_stime - before.ru_stime) / n,
      faults=(after.ru_minflt - before.ru_minflt) / n, max_rss_mib=after.ru_maxrss / 1024)))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="shapes")
  p.add_argument("--attention", default="softmax")
  p.add_argument("--batch", type=int, default=0, help="0: the model's own")
  p.add_argument("--steps", type=int, default=15)
  p.add_argument("--pairs", type=int, default=2)
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--retain", action="store_true", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.child:
    child(a)
    return
  import train_speed  # pylint: disable=g-import-not-at-top

  from slot_ot_jax.training import host  # pylint: disable=g-import-not-at-top
  base = [sys.executable, os.path.abspath(__file__), "--child", f"--model={a.model}",
          f"--attention={a.attention}", f"--batch={a.batch}", f"--steps={a.steps}"]
  rows = []
  for _ in range(a.pairs):
    for retain in (False, True):
      out = subprocess.run(base + (["--retain"] if retain else []), check=True,
                           capture_output=True, text=True).stdout
      rows.append(json.loads(out.strip().splitlines()[-1]))
  lines = host.host_lines() + [
      f"# {a.model}, {a.attention}, batch {a.batch or 'default'}; each row its own process, "
      f"medians of {a.steps} steps after 2 warm-up steps, one XLA thread", "",
      "| freed memory | step ms | user ms / step | system ms / step | page faults / step "
      "| peak RSS MiB |", "| --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    lines.append(f"| {'kept' if r['retained'] else 'returned (glibc default)'} | "
                 f"{r['step_ms']:.1f} | {r['user_ms']:.1f} | {r['sys_ms']:.1f} | "
                 f"{r['faults']:.0f} | {r['max_rss_mib']:.0f} |")
  lines += ["", train_speed.command_line("allocator.py")]
  print("\n".join(lines))


if __name__ == "__main__":
  main()
