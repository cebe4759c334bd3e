r"""DINOSAUR on MOVi-C / MOVi-D: Krimmel et al. §5.2, Table 1, Figs. 3-5, App. F (task "dinosaur").

A feature autoencoder with slot attention over frozen DINO ViT-B/8 patch features (28 x 28
x 768 per 224x224 frame), trained on single frames of MOVi-C and evaluated with the alpha
masks upsampled to 224x224 (slot_ot_jax/tasks/dinosaur.py). Three steps:

  1. the kubric TFDS release on disk (source gs://kubric-public/tfds/movi_c/256x256/1.0.0,
     likewise movi_d; layout in slot_ot_jax/data/movi.py), under MOVI_DIR;
  2. the features, once (weights: the DINO ViT-B/8 checkpoint as an .npz,
     slot_ot_jax/modules/vit.py):
       python scripts/extract_vit_features.py --movi_dir=MOVI_DIR --name=movi_c \
           --weights=dino_vitb8.npz --out_dir=data/movi_features
     (and --name=movi_d --splits=validation,test for the zero-shot evaluation);
  3. training, e.g. the (6, 7) batch-norm model of Table 1:
       python main.py --config=configs/movi_dinosaur.py:dataset=c6,update_norm=batch_norm \
           --workdir=workdirs/dinosaur_c6_bn
     then its MOVi-D zero-shot evaluation with 24 slots on the test split:
       python main.py \
           --config=configs/movi_dinosaur.py:dataset=c6,update_norm=batch_norm,eval=movi_d \
           --workdir=workdirs/dinosaur_c6_bn --config.mode=eval
     (`--config.evaluation.slot_counts=7,11,15,19,24` adds per-slot-count scores, Figs. 3-5).

Arguments: dataset=c6|c10 (MOVi-C clips with at most 6 objects, or all of MOVi-C: 3-10),
slots=<int> (training slots; 0 = 7 for c6, 11 for c10; Krimmel's variants (O, K) = (10, 11),
(6, 11), (6, 7)), update_norm=weighted_mean|layer_norm|weighted_sum|batch_norm (Krimmel
§4: baseline, layer, weighted sum, batch), eval=movi_c|movi_d (movi_d: 24 slots, Table 1),
attention=softmax|sinkhorn|mesh, seed=<int>, runlocal=1 (tiny model on features of a tiny
ViT: see below). Data paths: --config.data.features_dir, --config.data.movi_dir.

Hyper-parameters (App. F): encoder LayerNorm-Dense(768)+ReLU-Dense(128); slots, keys,
queries, values 128, slot MLP 512, 3 iterations in training and evaluation; decoder with a
learned position embedding and MLP 1024 x 3 -> 769; feature MSE; batch 64; Adam, peak
4e-4 after a 10k-step linear warm-up, half-life 100k steps, 500k steps. The paper gives no
gradient clipping: we keep the trainer's global-norm 0.1 of the other image configs (a
choice). Frames: MOVi-C's train split (9,737 clips x 24 frames), evaluation during training
on validation (250 clips), mode=eval on test (999 clips).

Krimmel Table 1 (MOVi-D zero-shot, 24 slots; median +- max deviation; F-ARI / l2 / ARI):
  (10, 11) baseline 0.647 / 2.143 / 0.172   layer 0.660 / 2.146 / 0.171
           w. sum   0.722 / 2.223 / 0.204   batch 0.725 / 2.149 / 0.182
  (6, 11)  baseline 0.640 / 2.220 / 0.176   layer 0.639 / 2.220 / 0.176
           w. sum   0.709 / 2.309 / 0.205   batch 0.711 / 2.219 / 0.175
  (6, 7)   baseline 0.741 / 2.370 / 0.253   layer 0.742 / 2.365 / 0.253
           w. sum   0.797 / 2.475 / 0.242   batch 0.809 / 2.374 / 0.297
MOVi-C numbers are only plotted (Figs. 3-5), not printed. None of these was trained here:
the data are not on our machines, and 500k steps need a GPU (not measured; the decoder
alone runs 3 x 1024-wide layers over 784 positions for every slot).

runlocal=1: 4x4 grids of 16-dim features from the tiny ViT, slots of 16, 20 steps at batch
8, on a fake MOVi written with the commands below (measured on a 2-core CPU shared with
other jobs: 11 s, 27 s and 48 s of CPU time, 0.9, 2.0 and 4.1 min wall; mostly imports and
compilation)
  python scripts/make_fake_movi.py --data_dir=/tmp/movi
  python scripts/extract_vit_features.py --movi_dir=/tmp/movi --resolution=32x32 \
      --vit=tiny --weights=random --out_dir=/tmp/movi_features
  python main.py --config=configs/movi_dinosaur.py:runlocal=1 --workdir=/tmp/dino \
      --config.data.features_dir=/tmp/movi_features

Initialisation: framework_defaults="ocl" (docs/reference_defaults.md):
DINOSAUR's code, the object-centric-learning-framework
(PyTorch defaults; zero biases in its MLPs; slots_mu / slots_log_sigma xavier_uniform;
decoder position embedding N(0, 0.02^2)); Krimmel et al. released no code.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common

DATASETS = {"c6": 6, "c10": -1}        # MOVi-C object filter (-1: all, i.e. 3-10 objects).
DEFAULT_SLOTS = {"c6": 7, "c10": 11}
EVAL_DATASETS = ("movi_c", "movi_d")
UPDATE_NORMS = ("weighted_mean", "layer_norm", "weighted_sum", "batch_norm")
ATTENTIONS = ("softmax", "sinkhorn", "mesh")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """e.g. arg "dataset=c6,slots=7,update_norm=batch_norm,eval=movi_d,seed=1"."""
  arg = common.parse_arg(arg, dataset="c10", slots=0, update_norm="weighted_mean",
                         eval="movi_c", attention="softmax", seed=0, runlocal=False)
  common.check_choice("dataset", arg.dataset, tuple(DATASETS))
  common.check_choice("update_norm", arg.update_norm, UPDATE_NORMS)
  common.check_choice("eval", arg.eval, EVAL_DATASETS)
  common.check_choice("attention", arg.attention, ATTENTIONS)

  config = common.get_base_config()
  config.task = "dinosaur"
  config.mode = "train"  # "eval": evaluate the workdir's latest checkpoint on the test split.
  config.seed = arg.seed
  config.runlocal = arg.runlocal

  config.data = ml_collections.ConfigDict()
  config.data.features_dir = "data/movi_features"  # Output of extract_vit_features.py.
  config.data.movi_dir = config_dict.placeholder(str)  # Kubric TFDS root (error messages).
  config.data.vit = "vit_b8"             # Feature config: <features_dir>/<name>_features/<vit>.
  config.data.name = "movi_c"
  config.data.max_objects = DATASETS[arg.dataset]
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.shuffle_buffer = 10_000

  config.model = ml_collections.ConfigDict()
  config.model.grid = 28                 # Patch grid of the features (224 / 8).
  config.model.feature_size = 768        # ViT width.
  config.model.encoder_hidden = 0        # 0: feature_size (Table 4).
  config.model.decoder_hidden = (1024, 1024, 1024)
  config.model.slot_attention = common.slot_attention_kwargs(
      num_slots=arg.slots or DEFAULT_SLOTS[arg.dataset], slot_size=128, mlp_size=512,
      num_iters=3, attention=arg.attention, update_norm=arg.update_norm,
      framework_defaults="ocl")  # DINOSAUR's code: the object-centric-learning-framework.

  config.evaluation.dataset = arg.eval   # Feature dataset of evaluation.
  config.evaluation.max_objects = -1     # Object filter of evaluation (6: MOVi-C6).
  config.evaluation.num_slots = 24 if arg.eval == "movi_d" else config_dict.placeholder(int)
  config.evaluation.test_split = "test"  # Split of mode="eval".
  config.evaluation.slot_counts = ""     # e.g. "7,11,15,19,24": extra slot counts.
  config.evaluation.count_unmatched_predictions = False

  common.set_schedule(config, num_train_steps=500_000, learning_rate=4e-4,
                      warmup_steps=10_000, decay_rate=0.5, decay_steps=100_000)

  if arg.runlocal:
    config.data.features_dir = "/tmp/movi_features"
    config.data.vit = "tiny"
    config.data.shuffle_buffer = 100
    config.model.grid, config.model.feature_size = 4, 16
    config.model.decoder_hidden = (32, 32)
    sa = config.model.slot_attention
    sa.slot_size, sa.mlp_size = 16, 32
    if config.evaluation.num_slots is not None:
      config.evaluation.num_slots = 12
    config.batch_size = config.eval_batch_size = 8
    common.set_schedule(config, num_train_steps=20, warmup_steps=5, decay_steps=100)
    common.set_intervals(config, log=10, eval=20, checkpoint=20)
    config.checkpoints_to_keep = 1
  return common.lock(config)
