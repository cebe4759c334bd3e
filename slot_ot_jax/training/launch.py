"""Helpers shared by the scripts that launch `main.py` runs (the sweep runner, the studies)."""
from __future__ import annotations

import argparse
import os
from typing import Sequence


def override_flags(overrides: Sequence[str]) -> list[str]:
  """`KEY=VALUE` overrides as main.py flags: `--config.KEY=VALUE`."""
  return [f"--config.{o}" for o in overrides]


def add_override_argument(parser: argparse.ArgumentParser,
                          needs: str = "its own --workdir and --tag") -> None:
  """Adds the repeatable `--override KEY=VALUE` flag (`--config.KEY=VALUE` in every run)."""
  parser.add_argument("--override", action="append", default=[],
                      help=f"KEY=VALUE: --config.KEY=VALUE for every run (repeatable); needs "
                           f"{needs}")


def check_overrides(parser: argparse.ArgumentParser, overrides: Sequence[str],
                    own_outputs: bool, needs: str) -> None:
  """Exits with a parser error unless every override is KEY=VALUE and the outputs are the run's own.

  Args:
    parser: the script's parser (its `error` prints usage and exits with status 2).
    overrides: the `--override` values.
    own_outputs: whether the caller gave its own workdir and output (table) paths; runs with
      overrides must not write over the default runs or tables.
    needs: the flags that make the outputs the caller's own, for the message, e.g.
      "--workdir and --tag".
  """
  for o in overrides:
    key, sep, _ = o.partition("=")
    if not sep or not key.strip():
      parser.error(f"--override {o!r} is not KEY=VALUE")
  if overrides and not own_outputs:
    parser.error(f"--override needs its own {needs} (the default runs and tables stay as "
                 "they are)")


def one_thread_env(env: dict[str, str] | None = None) -> dict[str, str]:
  """A copy of `env` (default: os.environ) that keeps XLA, OpenMP and TF to one CPU thread."""
  env = dict(os.environ if env is None else env)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1").strip()
  env.update(OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
  return env
