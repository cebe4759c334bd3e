r"""Cardinality generalisation on the offline shapes (003, Krimmel et al.).

The study over the four normalisations x seeds is scripts/cardinality_study.py. One run:

  python main.py --config=configs/cardinality_shapes.py:update_norm=weighted_sum,seed=0 \
      --workdir=workdirs/cardinality_shapes/weighted_sum_0
  # Sweep of the trained model (slot counts x object counts; table, JSON, figures):
  python main.py --config=configs/cardinality_shapes.py:update_norm=weighted_sum,seed=0 \
      --workdir=workdirs/cardinality_shapes/weighted_sum_0 --config.mode=eval

Arguments: update_norm=weighted_mean|layer_norm|weighted_sum|batch_norm (003's baseline,
layer norm, weighted sum 1/N, scalar batch norm), seed=<int>, steps=<int> (default 3000),
learning_rate=<float> (default 1e-3), runlocal=1.

The CPU-sized analogue of 003's CLEVR6 (6, 7) -> CLEVR10 study: train on shapes/16x16 (1-3
sprites) with 4 slots, 3 iterations; evaluate with 5 iterations (003 §5) on shapes/16x16_6
(1-6 sprites of the same sizes; test split, 1,280 scenes as 003) with 4 slots, and in
`mode=eval` the sweep over slot counts 4,6,8,10 x every object count present
(`slot_ot_jax/evaluation/cardinality.py`). Model: the Multi-dSprites autoencoder (full-resolution
broadcast decoder) at 16x16 with 3x3 convs of 16 channels (model.kernel_size=3, for CPU
speed), slot size 32, slot MLP 64; batch 16, Adam 1e-3, warm-up 10%, the learning rate halved
once over the run, clipping 0.1. The learning rate was chosen on one run (weighted mean, seed
0, 3,000 steps, FG-ARI / FG-mIoU % on the 1,280 test scenes with 4 slots): 4e-4: 37.6 / 15.0,
slots still split the image into regions; 1e-3: 41.1 / 41.7, one sprite per slot; 2e-3:
58.8 / 30.1, blurrier masks. 4e-4 (the SA paper's) is too slow for a run of minutes.

Published: none (a dataset of this project); 003 shows the CLEVR curves as figures only.

Runtime: 3,000 steps at about 15 steps/s on one CPU thread (two runs side by side on a 2-core
machine): 3.5-6 minutes with start-up, compilation and evaluation; the sweep 17-91 s.
runlocal=1: a few minutes (shapes/tiny).

Initialisation: framework_defaults="flax" (docs/reference_defaults.md), unlike
configs/clevr_cardinality.py ("ocl"): an offline demonstration whose settings were chosen and
whose documented numbers were measured with Flax's initialisers.
"""
from configs import common
from configs import object_discovery

NORMS = ("weighted_mean", "layer_norm", "weighted_sum", "batch_norm")
SWEEP_SLOTS = "4,6,8,10"


def get_config(arg=None):
  arg = common.parse_arg(arg, update_norm="weighted_mean", seed=0, steps=3000,
                         learning_rate=1e-3, runlocal=False)
  common.check_choice("update_norm", arg.update_norm, NORMS)
  config = object_discovery.build(
      "shapes", f"update_norm={arg.update_norm},seed={arg.seed},steps={arg.steps},width=16,"
      f"batch_size=16,runlocal={int(arg.runlocal)}")
  config.unlock()
  sa = config.model.slot_attention
  sa.num_iters, sa.num_iters_eval = 3, 5
  sa.framework_defaults = "flax"  # Offline demonstration (see the docstring).
  ev = config.evaluation
  ev.sweep_slot_counts = SWEEP_SLOTS
  if not arg.runlocal:
    config.data.name, config.data.resolution = "shapes/16x16", 16
    ev.dataset, ev.num_slots = "shapes/16x16_6", 4
    sa.slot_size, sa.mlp_size = 32, 64
    config.model.kernel_size = 3
    config.batch_size = config.eval_batch_size = 16
    # Short runs: warm-up over the first 10%, the learning rate halved once over the run.
    common.set_schedule(config, num_train_steps=arg.steps, warmup_steps=max(arg.steps // 10, 1),
                        decay_steps=arg.steps, learning_rate=float(arg.learning_rate))
    common.set_intervals(config, log=200, eval=arg.steps, checkpoint=arg.steps)
    config.checkpoints_to_keep = 1
  else:
    ev.sweep_slot_counts = "3,5"
  return common.lock(config)
