r"""Trains and evaluates one experiment config.

  python main.py --config=configs/random_objects.py:attention=mesh,sigma=0.01 \
      --workdir=workdirs/random_objects_mesh_0.01 [--config.seed=1 ...]

Rerunning with the same --workdir resumes from its latest checkpoint that restores (a
damaged newer one is skipped, named and moved to <workdir>/checkpoints_damaged/). SIGTERM or
Ctrl-C (SIGINT) saves a checkpoint and exits with status 0; rerun to continue (a second
Ctrl-C aborts without saving). One trainer at a time per workdir (<workdir>/train.lock). A
resume under a config that differs from the workdir's config.json is an error unless
--allow_config_change is given (config.json keeps the original). Guarantees and the tests
that hold them: docs/reliability.md.

Several processes (hosts, or several processes on one machine): start the same command on
every process with --distributed. On a cluster that JAX detects (Cloud TPU, SLURM, Open MPI,
Kubernetes jobs) nothing else is needed; otherwise give the coordinator (process 0's
host:port) and the process layout, e.g. two processes on one machine:

  python main.py --config=... --workdir=W --distributed --coordinator_address=127.0.0.1:9876 \
      --num_processes=2 --process_id=0    # and --process_id=1 in a second shell

Every process must see the same --workdir (a shared file system or bucket). The global batch
(config.batch_size) is split evenly over the processes, and each one feeds its own slice.
"""
import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from slot_ot_jax.training import allocator
from slot_ot_jax.training import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, optionally with an argument: file.py:arg.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and final metrics.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-process runs).")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0's coordinator (with --distributed; default: "
                    "$JAX_COORDINATOR_ADDRESS or the detected cluster's).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
flags.DEFINE_bool("allow_config_change", False,
                  "Resume even if the config differs from the workdir's config.json (which is "
                  "kept; the new config is written as config_resumed_at_<step>.json).")
flags.DEFINE_bool("retain_freed_memory", True,
                  "On CPU, keep freed heap memory in the process (glibc mallopt) so that the "
                  "training step does not page-fault its buffers anew at every step "
                  "(slot_ot_jax/training/allocator.py).")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_orbax(record) -> bool:
  """Drops orbax's per-save INFO lines (dozens per checkpoint); warnings still show."""
  return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_logger().addFilter(_quiet_orbax)
  import jax  # pylint: disable=g-import-not-at-top
  layout = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  if not FLAGS.distributed and any(v is not None for v in layout):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id need "
                         "--distributed.")
  if FLAGS.distributed:
    # On CPU, cross-process collectives use jax_cpu_collectives_implementation ("gloo" by
    # default in jax 0.10; "mpi" is the alternative).
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  if FLAGS.retain_freed_memory and jax.default_backend() == "cpu":
    logging.info("Freed heap memory stays in the process: %s", allocator.retain_freed_memory())
  try:
    result = train.train_and_evaluate(FLAGS.config, FLAGS.workdir,
                                      allow_config_change=FLAGS.allow_config_change)
  except train.USER_ERRORS as e:
    print(f"Error ({type(e).__name__}): {e}", file=sys.stderr)
    sys.exit(1)
  if result.get("preempted"):
    print(f"Stopped at step {result['step']} ({result.get('signal') or 'preempted'}) with a "
          "checkpoint; rerun to resume.")
  elif jax.process_index() == 0:
    print(f"Step {result['step']}: {result['report']}")


if __name__ == "__main__":
  app.run(main)
