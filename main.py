r"""Trains and evaluates one experiment config.

  python main.py --config=configs/random_objects.py:attention=mesh,sigma=0.01 \
      --workdir=workdirs/random_objects_mesh_0.01 [--config.seed=1 ...]

Rerunning with the same --workdir resumes from its latest checkpoint. SIGTERM saves a
checkpoint and exits with status 0; rerun to continue. Several hosts: pass --distributed
on every host (`jax.distributed.initialize()` reads the cluster from the environment).
"""
import logging as std_logging

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from slot_ot_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, optionally with an argument: file.py:arg.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and final metrics.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_orbax(record) -> bool:
  """Drops orbax's per-save INFO lines (dozens per checkpoint); warnings still show."""
  return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_logger().addFilter(_quiet_orbax)
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  result = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if result.get("preempted"):
    print(f"Stopped at step {result['step']} with a checkpoint; rerun to resume.")
  elif jax.process_index() == 0:
    print(f"Step {result['step']}: {result['report']}")


if __name__ == "__main__":
  app.run(main)
