"""Where the random-objects training step spends its time, op by op, from a profiler trace
(not a test).

  python benchmarks/step_trace.py [--steps=10] [--sigma=0.01] [--top=12] [--out=FILE]

For SA, SA-SH, SA-MESH with differentiated MESH steps (the config's default) and SA-MESH
straight through (SA-MESH is SA-SH plus the MESH steps and their noise), on one device and
one XLA thread: the step's median wall time without the profiler (interleaved rounds), then
a `jax.profiler` trace of --steps steps. Every XLA thunk in the trace is charged its self
time (its duration less that of the thunks it contains, such as a while loop's body; thunks
running at once share the wall time) and mapped, through the optimised HLO's metadata, to
the JAX operation it came from; the times are summed by part of the step:

  transport forward / backward   SlotAttention's `_transport` (Sinkhorn, MESH steps) in the
                                 forward pass, and in its transpose (the backward pass);
  slot attention, rest           projections, LayerNorms, GRU, MLP, attention updates;
  noise                          the MESH noise (`jax.random.normal`);
  loss and optimizer             Hungarian-matched loss, gradient clipping, Adam.

The thread that waits for the thunks (the executor's "wait for completion") is not counted.
The profiler adds a cost to every thunk, so the profiled sum exceeds the plain step time, and
most where a step runs many small thunks (the differentiated MESH steps): the plain medians
say what a step costs, the profile which operations take the time. Prints the host.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import tempfile

# The optimised HLO of every compiled step (for the thunk -> JAX operation names).
HLO_DUMP = tempfile.mkdtemp(prefix="step_trace_hlo")
os.environ["XLA_FLAGS"] = (f"--xla_dump_to={HLO_DUMP} " + os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_multi_thread_eigen=false").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import random_objects_mesh_paths as paths  # noqa: E402
import train_speed  # noqa: E402

from slot_ot_jax.training import host  # noqa: E402

MODELS = (("SA", "softmax", None), ("SA-SH", "sinkhorn", None),
          ("SA-MESH, differentiated steps (default)", "mesh", True),
          ("SA-MESH, straight through", "mesh", False))
PARTS = ("transport forward", "transport backward", "slot attention, rest", "noise",
         "loss and optimizer")


def part_of(op_name: str) -> str:
  """The part of the step (see the module docstring) that a JAX op_name belongs to."""
  if "_normal" in op_name or "random_bits" in op_name or "threefry" in op_name:
    return "noise"
  if "_transport" in op_name:
    backward = "transpose(" in op_name.split("_transport")[0]
    return "transport backward" if backward else "transport forward"
  if "SlotAttention" in op_name:
    return "slot attention, rest"
  return "loss and optimizer"


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the op_name of its metadata (the JAX operation's name stack)."""
  return {m.group(1): m.group(2)
          for m in re.finditer(r"%([\w.\-]+) = [^\n]*?op_name=\"([^\"]*)\"", hlo_text)}


def self_times(events: list[dict]) -> list[tuple[dict, float]]:
  """(event, time in us charged to it) for the complete events.

  An event's own intervals are its span less those of the events nested in it on its thread
  (a while loop less its body's thunks). Thunks that run at the same time on different
  threads share the wall time between them (each of c concurrent ones is charged 1/c), so
  the charges add up to the time during which any thunk ran, however the thread pool
  interleaved them.
  """
  by_thread = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X":
      by_thread[e["tid"]].append(e)
  own = []  # (start, end, event index)
  listed = []
  for evs in by_thread.values():
    evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack = []  # [event index, end, cursor]: cursor = start of its not-yet-charged part
    for e in evs:
      start, end = e["ts"], e["ts"] + e["dur"]
      while stack and stack[-1][1] <= start:
        idx, top_end, cursor = stack.pop()
        own.append((cursor, top_end, idx))
      if stack:
        parent = stack[-1]
        own.append((parent[2], start, parent[0]))
        parent[2] = end
      listed.append(e)
      stack.append([len(listed) - 1, end, start])
    for idx, top_end, cursor in reversed(stack):
      own.append((cursor, top_end, idx))
  charge = [0.0] * len(listed)
  points = sorted([(s0, 1, i) for s0, e0, i in own if e0 > s0]
                  + [(e0, 0, i) for s0, e0, i in own if e0 > s0])
  active, last = collections.Counter(), None
  for t, kind, i in points:
    if active and last is not None and t > last:
      share = (t - last) / sum(active.values())
      for k, n in active.items():
        charge[k] += share * n
    last = t
    if kind:
      active[i] += 1
    else:
      active[i] -= 1
      if not active[i]:
        del active[i]
  return list(zip(listed, charge))


def profile(trainer, state, batch, hlo_text: str, steps: int, workdir: str):
  """(seconds per step by part, by op) from a trace of `steps` steps."""
  names = op_names(hlo_text)
  trace_dir = os.path.join(workdir, "trace")
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  for _ in range(steps):
    state, _, finite = trainer.train_step(state, batch)
    finite.block_until_ready()
  jax.profiler.stop_trace()
  path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  # Only the compiled step's thunks: Python-side, dispatch and waiting events are not its work.
  thunks = [e for e in events if e.get("name") in names]
  parts, ops = collections.Counter(), collections.Counter()
  for e, own in self_times(thunks):
    op = names[e["name"]]
    parts[part_of(op)] += own / steps / 1e6
    short = re.sub(r"\[[^\]]*\]|\{[^}]*\}", "", op)
    short = "/".join(p for p in short.split("/") if p not in ("while", "body", "closed_call"))
    ops[short] += own / steps / 1e6
  return parts, ops


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=10, help="traced steps per model")
  p.add_argument("--repeats", type=int, default=20, help="plain timed rounds")
  p.add_argument("--sigma", type=float, default=0.01)
  p.add_argument("--top", type=int, default=12, help="largest operations listed per model")
  p.add_argument("--out", default=None, help="also write the report here")
  a = p.parse_args()
  runs = {}
  for name, attention, differentiate in MODELS:
    before = set(glob.glob(os.path.join(HLO_DUMP, "*train_step*after_optimizations.txt")))
    runs[name] = paths.warm_run(attention, differentiate, a.sigma)
    new = set(glob.glob(os.path.join(HLO_DUMP, "*train_step*after_optimizations.txt"))) - before
    with open(new.pop()) as f:
      runs[name].append(f.read())
  plain = paths.interleaved_times(runs, a.repeats)
  # Every step is compiled: the dump flag has done its work and is not part of the setup.
  os.environ["XLA_FLAGS"] = os.environ["XLA_FLAGS"].replace(f"--xla_dump_to={HLO_DUMP}", "").strip()
  lines = host.host_lines() + [
      f"# random objects, sigma {a.sigma:g}; plain: medians of {a.repeats} interleaved steps;"
      f" profile: self time per step over {a.steps} traced steps", ""]
  table = ["| part of the step | " + " | ".join(runs) + " |",
           "| --- |" + " --- |" * len(runs)]
  profiles = {}
  with tempfile.TemporaryDirectory() as tmp:
    for i, (name, run) in enumerate(runs.items()):
      profiles[name] = profile(run[0], run[1], run[2], run[3], a.steps, os.path.join(tmp, str(i)))
  for part in PARTS:
    cells = []
    for name in runs:
      parts = profiles[name][0]
      total = sum(parts.values())
      cells.append(f"{1e3 * parts[part]:.2f} ms ({100 * parts[part] / total:.0f}%)")
    table.append(f"| {part} | " + " | ".join(cells) + " |")
  table.append("| sum of the thunks (profiled) | " + " | ".join(
      f"{1e3 * sum(profiles[n][0].values()):.2f} ms" for n in runs) + " |")
  table.append("| plain step (no profiler) | " + " | ".join(
      f"{1e3 * statistics.median(plain[n]):.2f} ms" for n in runs) + " |")
  lines += table
  for name in runs:
    lines += ["", f"## {name}: largest operations (self ms per step, profiled)"]
    for op, t in profiles[name][1].most_common(a.top):
      lines.append(f"- {1e3 * t:.3f}  {op}")
  lines += ["", train_speed.command_line("step_trace.py")]
  train_speed.emit(lines, a.out)
  shutil.rmtree(HLO_DUMP, ignore_errors=True)


if __name__ == "__main__":
  main()
