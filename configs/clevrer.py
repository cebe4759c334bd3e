r"""Two-frame video object discovery on CLEVRER-S/L: MESH paper §5.4, Table 5 (task "video").

  python main.py --config=configs/clevrer.py:dataset=l,attention=mesh \
      --workdir=workdirs/clevrer_l_mesh

One config per row of Table 5 and dataset, chosen by the arguments:

  row               arguments
  SA                attention=softmax                 (noise=none)
  SA fixed noise    attention=softmax,noise=fixed     (noise_sigma=<float>, default 0.1)
  SA learned noise  attention=softmax,noise=learned
  SA-SH             attention=sinkhorn
  SA-MESH           attention=mesh
  dataset=s (CLEVRER-S: frames 0 and 16) or l (CLEVRER-L: frames 0 and 127), s_fake or l_fake
  (the fake files of datasets/clevrer/dummy_data: add
  --config.data.manual_dir=datasets/clevrer/dummy_data); seed=<int>;
  runlocal=1 (a short CPU run on shapes_video/tiny with a small model: 40 steps).

Evaluation only, on the test split (videos 15000-19999), of the checkpoint of lowest
validation loss: add --config.mode=eval (writes WORKDIR/eval_metrics.json).

Data: datasets/clevrer (64x64 frames, at most 7 objects per frame, objects identified across
the two frames by (colour, material, shape); MESH splits: train 0-9999 less videos 7648 and
9777 (short proposal files), validation 10000-10319, test 15000-19999, nothing skipped in
those two). Evaluation as the MESH code (docs/evaluation.md): temporal consistency counts
every pair of same-attribute objects across the frames (evaluation.tc_identity="attributes")
and FG-mIoU is averaged over all frames (evaluation.miou_average="frames"). The MESH code
reports the test split with the checkpoint of lowest validation loss (its ModelCheckpoint
monitors loss/val and `trainer.test` then loads the best one), and so does mode=eval here:
training keeps the state of lowest evaluation loss in WORKDIR/checkpoints_best/
(checkpoint_best_metric="loss", mode "min"; all variants, runlocal=1 included) and mode=eval
restores it (evaluation.checkpoint="best"; --config.evaluation.checkpoint=latest evaluates the
latest checkpoint). Our evaluation loss is the reconstruction error; MESH's validation loss
also adds the KL term of the learned-noise row. Model (MESH
App. F.4 and its reference configs): the Multi-dSprites encoder/decoder (32 channels, 64x64
broadcast), 8 slots, slot size 64, slot MLP 128, 3 iterations; slots of frame 0 initialise
frame 1. OT variants: cosine cost (App. F.4), cost scale 1, marginals scaled by the number of
slots, 5 Sinkhorn iterations, 4 MESH steps at lr 8. Learned noise: LayerNorm + 2-layer MLP,
KL weight 1 to prior variance 0.1 (reference). The fixed-noise sigma is given by neither the
paper nor the reference configs: 0.1 is our choice. Adam 4e-4, warm-up 10k, halved per 100k,
clipping 0.1, batch 64, 530 epochs of the 9,998 training videos = 82,793 steps.

Published (Table 5, 5 seeds, %): SA-MESH FG-ARI 93.8 / 92.9, FG-mIoU 44.1 / 54.4, TC 80.2 /
55.4 on S / L; the other rows are in slot_ot_jax/tasks/video.py (PUBLISHED), SA's also in
docs/video.md.

Runtime: not measured on an accelerator; each step encodes, attends and decodes two 64x64
frames, about twice a Multi-dSprites step (whose 500k steps take about a day for SA on one
V100, SA paper). Not practical on CPU except runlocal=1; the offline
demonstration is configs/shapes_video.py.

Initialisation: framework_defaults="torch" (docs/reference_defaults.md):
the MESH reference (PyTorch) of Table 5.
"""
from __future__ import annotations

import ml_collections

from configs import common

ATTENTIONS = ("softmax", "sinkhorn", "mesh")  # SA-EMD is not run on videos (MESH §5.4).
NOISES = ("none", "fixed", "learned")
DATASETS = {"s": "clevrer/s", "l": "clevrer/l", "s_fake": "clevrer/s_fake",
            "l_fake": "clevrer/l_fake"}
CLEVRER_TRAIN_VIDEOS = 9_998  # Videos 0-9999 less 7648 and 9777 (short proposals).


def build(data_name: str, arg: str | None, *, resolution: int, max_objects: int, width: int,
          steps: int, batch_size: int, **arg_defaults) -> ml_collections.ConfigDict:
  """The locked video config of dataset `data_name` with argument string `arg`."""
  defaults = dict(attention="softmax", noise="none", noise_sigma=0.1, seed=0, runlocal=False)
  defaults.update(arg_defaults)
  arg = common.parse_arg(arg, **defaults)
  common.check_choice("attention", arg.attention, ATTENTIONS)
  common.check_choice("noise", arg.noise, NOISES)
  if arg.noise != "none" and arg.attention != "softmax":
    raise ValueError(f"noise={arg.noise} is a baseline of SA (attention=softmax) in MESH "
                     f"Table 5, not of attention={arg.attention}.")

  config = common.get_base_config()
  config.task = "video"
  config.mode = "train"  # "eval": evaluate a checkpoint (evaluation.checkpoint) on test_split.
  config.seed = arg.seed
  config.runlocal = arg.runlocal
  config.batch_size = config.eval_batch_size = batch_size

  config.data = ml_collections.ConfigDict()
  config.data.name = data_name           # A key of slot_ot_jax.tasks.video.PRESETS.
  config.data.data_dir = ml_collections.config_dict.placeholder(str)
  config.data.manual_dir = ml_collections.config_dict.placeholder(str)
  config.data.prepare = True
  config.data.train_split = "train"
  config.data.eval_split = ""            # "" = the dataset's (validation).
  config.data.resolution = resolution    # The stored frame size (no resizing in the task).

  config.model = ml_collections.ConfigDict()
  config.model.architecture = "multi_dsprites"   # Encoder/decoder of models.py.
  config.model.width = width                     # Conv channels; 0 = the architecture's.
  config.model.encoder_stride = 1                # > 1: stride of the first conv (CPU runs).
  config.model.decoder_broadcast = 0             # 0: full-resolution broadcast; else its side.
  ot = arg.attention != "softmax"
  config.model.slot_attention = common.slot_attention_kwargs(
      num_slots=max_objects + 1, slot_size=64, mlp_size=128, num_iters=3,
      attention=arg.attention, cost="cosine" if ot else None,
      framework_defaults="torch")  # The MESH reference's (PyTorch) initialisers.
  config.model.transition = ml_collections.ConfigDict()
  config.model.transition.kind = arg.noise       # none | fixed | learned.
  config.model.transition.noise_sigma = arg.noise_sigma if arg.noise == "fixed" else 0.0
  config.model.transition.prior_variance = 0.1   # Learned noise: KL prior variance.
  config.model.kl_weight = 1.0

  config.evaluation.test_split = "test"  # Split of mode="eval".
  # MESH's definitions on CLEVRER (Table 5 comparability; docs/evaluation.md): objects are
  # identified across the frames by (colour, material, shape) and FG-mIoU is averaged over
  # all frames. Datasets without attributes (the offline sprites) use ids and per-video means.
  clevrer = data_name.startswith("clevrer/")
  config.evaluation.tc_identity = "attributes" if clevrer else "ids"   # ids | attributes.
  config.evaluation.miou_average = "frames" if clevrer else "videos"   # videos | frames.

  config.images = ml_collections.ConfigDict()
  config.images.num_examples = 4         # Examples in the grid (two rows each); 0 = none.
  config.images.mode = "mask"            # Slot tiles: "mask", "rgb" or "image".

  common.set_schedule(config, num_train_steps=steps)

  if arg.runlocal:
    # A short CPU run: 40 steps of a small model on shapes_video/tiny.
    config.data.name = "shapes_video/tiny"
    config.data.resolution = 32
    config.evaluation.tc_identity = "ids"          # The sprites have no attributes.
    config.evaluation.miou_average = "videos"
    config.model.width = 16
    sa = config.model.slot_attention
    sa.num_slots, sa.slot_size, sa.mlp_size = 5, 32, 64
    config.batch_size = config.eval_batch_size = 8
    common.set_schedule(config, num_train_steps=40, warmup_steps=10, decay_steps=100)
    common.set_intervals(config, log=10, eval=20, checkpoint=20)
    config.checkpoints_to_keep = 1
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """CLEVRER-S or -L, e.g. arg "dataset=l,attention=mesh,seed=1"."""
  dataset = "s"
  rest = []
  for item in (arg or "").split(","):
    if item.strip().startswith("dataset="):
      dataset = item.split("=", 1)[1].strip()
    elif item.strip():
      rest.append(item)
  common.check_choice("dataset", dataset, tuple(DATASETS))
  config = build(DATASETS[dataset], ",".join(rest), resolution=64, max_objects=7, width=32,
                 steps=530 * CLEVRER_TRAIN_VIDEOS // 64, batch_size=64)
  # The MESH protocol: test the checkpoint of lowest validation loss (not in build(), which
  # configs/shapes_video.py shares).
  common.evaluate_best_checkpoint(config)
  return common.lock(config)
