r"""Unsupervised object discovery: shared composition of every setting (task "object_discovery").

The per-setting files (multi_dsprites.py, tetrominoes.py, clevr6.py, clevr10.py, clevrtex.py,
clevrtex_mesh.py, shapes.py) are thin wrappers around `build(setting, arg)`; this file also
runs any setting directly:

  python main.py --config=configs/object_discovery.py:setting=multi_dsprites,attention=mesh \
      --workdir=workdirs/multi_dsprites_mesh

Arguments (all settings): attention=softmax|sinkhorn|mesh (SA, SA-SH, SA-MESH),
update_norm=auto|weighted_mean|sum|weighted_sum|layer_norm|batch_norm (003), seed=<int>,
runlocal=1 (a one-minute CPU run on shapes/tiny with a small model).
Mixed precision (GPU/TPU): --config.model.compute_dtype=bfloat16 computes the backbone in
bfloat16 while the OT core stays float32 (see slot_ot_jax/modules/attention.py).

Evaluation only, on the test split, of the workdir's latest checkpoint, or for the MESH
settings (multi_dsprites, clevrtex) of the checkpoint of lowest validation loss, as the MESH
code tests (kept during training in WORKDIR/checkpoints_best/; checkpoint_best_metric="loss",
evaluation.checkpoint="best"; --config.evaluation.checkpoint=latest evaluates the latest):

  python main.py --config=configs/multi_dsprites.py:attention=mesh --workdir=WORKDIR \
      --config.mode=eval [--config.evaluation.num_slots=8] \
      [--config.evaluation.per_object_count=True] [--config.evaluation.slot_counts=6,8,10] \
      [--config.model.slot_attention.num_iters_eval=5] \
      [--config.evaluation.sweep_slot_counts=7,9,11,13]

writes WORKDIR/eval_metrics.json (FG-ARI, FG-mIoU, optional per-object-count and per-slot-count
breakdowns) and the image grid under WORKDIR/images/; with sweep_slot_counts, the cardinality
sweep of 003 (slot_ot_jax/evaluation/cardinality.py) writes
WORKDIR/cardinality/sweep.{json,md} and figures.

Settings (hyper-parameters: SA supplement Table 10, MESH App. F.3): batch 64, Adam 4e-4,
linear warm-up 10k, decay 0.5 per 100k, global-norm clipping 0.1 (MESH reference), 3 iterations.

  setting         data (resolution)                      conv ch  slot/MLP  slots  steps
  multi_dsprites  colored_on_grayscale (64), <= 5 objects  32      64/128     6    530 ep = 496,875
  tetrominoes     tetrominoes (35)                         32      64/128     4    500k
  clevr6          clevr6 crop -> 128, 8x8 broadcast        64      64/128     7    500k
  clevr10         as clevr6, evaluated on clevr10, 11 slots 64      64/128     7    500k
  clevr10_krimmel as clevr10 with 003's protocol (below)     64      64/128     7    500k
  clevrtex        clevrtex/full crop -> 64                 64     128/256    11    530 ep = 331,250
  shapes          shapes/32x32 (offline), <= 3 objects     32      64/128     4    20k

clevr10 follows the SA paper §4.1 (3 iterations, 320 CLEVR10 test scenes); clevr10_krimmel
follows 003 (Krimmel et al.) §5.1: 3 iterations in training, 5 in evaluation, 1,280 scenes
(multi_object_datasets/clevr10_krimmel), and in mode=eval the sweep over 7..13 slots x object
counts (configs/clevr_cardinality.py selects the normalisation and the training slot count).

Initialisation (model.slot_attention.framework_defaults, docs/reference_defaults.md): each
setting follows the code of the paper it reproduces: "torch" (the MESH reference, PyTorch) for
multi_dsprites and clevrtex; "keras" (the Slot Attention reference, TensorFlow/Keras) for
tetrominoes, clevr6 and clevr10; "ocl" for clevr10_krimmel (Krimmel et al. released no code;
assumed built on DINOSAUR's PyTorch object-centric-learning-framework, which their MOVi
experiments need). The offline shapes setting keeps "flax": its settings were chosen and its
documented numbers measured with Flax's initialisers (docs/reference_defaults.md).

Runtime: SA paper App.: 7.5 h (Tetrominoes), 24 h (Multi-dSprites), 5.5 days (CLEVR6) for 500k
steps of SA on one V100; SA-MESH costs more per step (4 MESH steps of 5 Sinkhorn iterations).
Not practical on CPU except `shapes` and `runlocal=1` (about a minute).
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common

OD_ATTENTIONS = ("softmax", "sinkhorn", "mesh")  # SA-EMD is not run on images (MESH §5.3).
UPDATE_NORMS = ("auto", "weighted_mean", "sum", "weighted_sum", "layer_norm", "batch_norm")

_MDS = "multi_object_datasets/"
SETTINGS = {
    "multi_dsprites": dict(dataset=_MDS + "multi_dsprites_colored_on_grayscale",
                           architecture="multi_dsprites", resolution=64, max_objects=5,
                           slot_size=64, mlp_size=128, epochs=530, train_size=60_000,
                           framework_defaults="torch", best_checkpoint="loss"),
    "tetrominoes": dict(dataset=_MDS + "tetrominoes", architecture="tetrominoes",
                        resolution=35, max_objects=3, slot_size=64, mlp_size=128,
                        steps=500_000, framework_defaults="keras"),
    "clevr6": dict(dataset=_MDS + "clevr6", architecture="clevr", resolution=128,
                   max_objects=6, slot_size=64, mlp_size=128, steps=500_000,
                   framework_defaults="keras"),
    "clevr10": dict(dataset=_MDS + "clevr6", architecture="clevr", resolution=128,
                    max_objects=6, slot_size=64, mlp_size=128, steps=500_000, flip=True,
                    framework_defaults="keras",
                    eval_dataset=_MDS + "clevr10", eval_slots=11,
                    slot_counts="7,8,9,10,11,12,13"),
    # 003 (Krimmel et al.) §5.1 protocol: CLEVR6 training with flips, 3 iterations in
    # training and 5 in evaluation, 1,280 CLEVR10 test scenes, the slot x object sweep.
    "clevr10_krimmel": dict(dataset=_MDS + "clevr6", architecture="clevr", resolution=128,
                            max_objects=6, slot_size=64, mlp_size=128, steps=500_000,
                            flip=True, eval_dataset=_MDS + "clevr10_krimmel", eval_slots=11,
                            num_iters_eval=5, sweep_slot_counts="7,8,9,10,11,12,13",
                            framework_defaults="ocl"),
    "clevrtex": dict(dataset="clevrtex/full", architecture="clevrtex", resolution=64,
                     max_objects=10, slot_size=128, mlp_size=256, epochs=530,
                     train_size=40_000, framework_defaults="torch", best_checkpoint="loss"),
    # Offline: Flax's initialisers, with which its settings were chosen and its documented
    # numbers measured (docs/reference_defaults.md#offline-demonstrations).
    "shapes": dict(dataset="shapes/32x32", architecture="multi_dsprites", resolution=32,
                   max_objects=3, slot_size=64, mlp_size=128, width=32, steps=20_000,
                   framework_defaults="flax"),
}


def _data_config() -> ml_collections.ConfigDict:
  # Same fields as `slot_ot_jax.data.input_pipeline.get_data_config()`, listed here so that
  # loading a config does not import TensorFlow (tests/test_object_discovery.py compares them).
  c = ml_collections.ConfigDict()
  c.name = "shapes/32x32"
  c.data_dir = config_dict.placeholder(str)
  c.manual_dir = config_dict.placeholder(str)
  c.prepare = True
  c.train_split = "train"
  c.eval_split = ""
  c.resolution = 0
  c.crop = "default"
  c.max_objects = -1
  c.flip = False
  c.shuffle_buffer = 10_000
  c.antialias = False
  return c


def build(setting: str, arg: str | None = None, **arg_defaults) -> ml_collections.ConfigDict:
  """The locked config of `setting` (a key of SETTINGS) with argument string `arg`.

  `arg_defaults` overrides the defaults of the arguments (e.g. attention="mesh").
  """
  s = SETTINGS[common.check_choice("setting", setting, tuple(SETTINGS))]
  defaults = dict(attention="softmax", update_norm="auto", seed=0, runlocal=False)
  if setting == "shapes":
    defaults.update(steps=s["steps"], width=s["width"], batch_size=64)
  defaults.update(arg_defaults)
  arg = common.parse_arg(arg, **defaults)
  common.check_choice("attention", arg.attention, OD_ATTENTIONS)
  common.check_choice("update_norm", arg.update_norm, UPDATE_NORMS)

  config = common.get_base_config()
  config.task = "object_discovery"
  config.mode = "train"  # "eval": evaluate a checkpoint (evaluation.checkpoint) on test_split.
  config.seed = arg.seed
  config.runlocal = arg.runlocal

  config.data = _data_config()
  config.data.name = s["dataset"]
  config.data.resolution = s["resolution"]
  config.data.flip = s.get("flip", False)

  config.model = ml_collections.ConfigDict()
  config.model.architecture = s["architecture"]  # Encoder/decoder of models.py.
  config.model.width = s.get("width", 0)         # Conv channels; 0 = the paper's.
  # Computation dtype of the encoder, decoder, position embeddings and the slot attention's
  # layers outside the OT core: "float32" or "bfloat16" (for GPU/TPU; parameters, the OT
  # core and the loss stay float32).
  config.model.compute_dtype = "float32"
  config.model.kernel_size = 0                  # Hidden conv kernels; 0 = the paper's (5).
  # Decoder's first layer computed without materialising the broadcast slots (same
  # parameters, same outputs up to float rounding; False: broadcast then convolve).
  config.model.fold_broadcast = True
  num_slots = s["max_objects"] + 1
  config.model.slot_attention = common.slot_attention_kwargs(
      num_slots=num_slots, slot_size=s["slot_size"], mlp_size=s["mlp_size"], num_iters=3,
      attention=arg.attention, update_norm=arg.update_norm,
      compute_dtype=config.model.get_ref("compute_dtype"),
      framework_defaults=s["framework_defaults"])
  if "num_iters_eval" in s:
    config.model.slot_attention.num_iters_eval = s["num_iters_eval"]

  config.evaluation.dataset = s.get("eval_dataset", "")  # "" = data.name.
  config.evaluation.max_objects = -1         # Object filter of evaluation.dataset.
  config.evaluation.num_slots = s.get("eval_slots", config_dict.placeholder(int))
  config.evaluation.test_split = "test"      # Split of mode="eval".
  config.evaluation.per_object_count = "eval_dataset" in s
  config.evaluation.slot_counts = s.get("slot_counts", "")  # e.g. "7,9,11".
  config.evaluation.count_unmatched_predictions = False     # True: ClevrTex evaluator mIoU.
  # mode="eval" only: slot counts x object counts sweep (003;
  # slot_ot_jax/evaluation/cardinality.py), e.g. "7,9,11,13": FG-ARI, ARI, FG-mIoU and loss per
  # cell, table, JSON and figures.
  config.evaluation.sweep_slot_counts = s.get("sweep_slot_counts", "")

  if "best_checkpoint" in s:  # The MESH reference tests the checkpoint of lowest val. loss.
    common.evaluate_best_checkpoint(config, s["best_checkpoint"])

  config.images = ml_collections.ConfigDict()
  config.images.num_examples = 4             # Rows of the image grid; 0 = none.
  config.images.mode = "mask"                # Slot tiles: "mask", "rgb" or "image".

  if "epochs" in s:  # MESH: 530 epochs.
    steps = s["epochs"] * s["train_size"] // config.batch_size
  elif setting == "shapes":
    steps = arg.steps
  else:
    steps = s["steps"]
  if setting == "shapes":
    config.model.width = arg.width
    config.batch_size = config.eval_batch_size = arg.batch_size
    # The papers' schedule shape compressed to the run: warm-up over the first 2%, halved
    # every fifth of the run (500k-step runs: 10k and 100k).
    common.set_schedule(config, num_train_steps=steps, warmup_steps=steps // 50,
                        decay_steps=steps // 5)
    common.set_intervals(config, log=100, eval=max(steps // 4, 1), checkpoint=1_000)
  else:
    common.set_schedule(config, num_train_steps=steps)

  if arg.runlocal:
    # About a minute on one CPU core: 60 steps of a small model on the tiny shapes set.
    config.data.name = "shapes/tiny"
    config.data.resolution = 32
    config.data.flip = False
    config.evaluation.dataset = ""
    if config.evaluation.num_slots is not None:
      config.evaluation.num_slots = 5
    config.evaluation.slot_counts = "3,5" if config.evaluation.slot_counts else ""
    config.evaluation.sweep_slot_counts = "3,5" if config.evaluation.sweep_slot_counts else ""
    config.model.width = 16
    sa = config.model.slot_attention
    sa.num_slots, sa.slot_size, sa.mlp_size = 4, 32, 64
    config.batch_size = config.eval_batch_size = 8
    common.set_schedule(config, num_train_steps=60, warmup_steps=10, decay_steps=100)
    common.set_intervals(config, log=10, eval=30, checkpoint=30)
    config.checkpoints_to_keep = 1
  return common.lock(config)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Any setting, e.g. arg "setting=clevrtex,attention=mesh,seed=1"."""
  setting = "shapes"
  rest = []
  for item in (arg or "").split(","):
    if item.strip().startswith("setting="):
      setting = item.split("=", 1)[1].strip()
    elif item.strip():
      rest.append(item)
  return build(setting, ",".join(rest))
