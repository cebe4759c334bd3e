r"""CLEVR6 -> CLEVR10 cardinality generalisation: 003 (Krimmel et al.) §5.1, Figs. 1-2, 6-7.

  python main.py --config=configs/clevr_cardinality.py:norm=weighted_sum,slots=7,seed=0 \
      --workdir=workdirs/clevr_card_weighted_sum_7_0
  # The sweep (7..13 slots x object counts on 1,280 CLEVR10 test scenes, 5 iterations):
  python main.py --config=configs/clevr_cardinality.py:norm=weighted_sum,slots=7 \
      --workdir=workdirs/clevr_card_weighted_sum_7_0 --config.mode=eval

Arguments: norm=weighted_mean|layer_norm|weighted_sum|batch_norm (003: baseline, layer norm,
weighted sum 1/N, scalar batch norm), slots=7|11 (003's (objects, slots) = (6, 7) and (6, 11)
settings), seed=<int>, runlocal=1.

Setting `clevr10_krimmel` of configs/object_discovery.py: training as configs/clevr6.py
(CLEVR6, crop 192 -> 128, random horizontal flips, 3 iterations, SA's CNN autoencoder,
Adam 4e-4, warm-up 10k, decay 0.5 per 100k, 500k steps at batch 64) with `slots` slots;
evaluation with 5 iterations (003 §5) on multi_object_datasets/clevr10_krimmel (1,280 test
scenes, 003 §5), 11 slots; `mode=eval` adds the sweep of slot_ot_jax/evaluation/cardinality.py:
FG-ARI, ARI, FG-mIoU and loss for 7..13 slots x every object count present, written to
<workdir>/cardinality/ (JSON, markdown, 003 Fig. 1 style PNG, TensorBoard image).
Data: python datasets/prepare.py multi_object_datasets/clevr6 --manual_dir=MANUAL_DIR, and
the same for multi_object_datasets/clevr10_krimmel (same source file).

Published (003): the CLEVR results are printed as curves only (Figs. 1-2 FG-ARI / ARI, Figs.
6-7 loss), with no table of numbers, so there is nothing to quote exactly. Qualitatively:
(6, 7), 5 seeds (two weighted-sum and two batch-norm runs decomposed spatially and were
dropped): baseline and layer norm lose FG-ARI beyond 9 slots, weighted sum and batch norm
stay stable and beat the baseline at 11 slots (§5.1); (6, 11), 3 seeds (one batch-norm run
dropped): the variants are closer, baseline and layer norm still degrade with extra slots,
and weighted sum / batch norm put the background in one slot (high ARI). 003's only printed
numbers are the MOVi-D zero-shot results (Table 1, DINOSAUR models).

Runtime: as CLEVR6 (about 5.5 days for SA on one V100, 500k steps), plus a sweep of 7
slot counts over 1,280 scenes; not practical on CPU (runlocal=1: about a minute on shapes/tiny).

Initialisation: framework_defaults="ocl" (docs/reference_defaults.md):
Krimmel et al. released no code; assumed built on DINOSAUR's
PyTorch object-centric-learning-framework, which their MOVi experiments need (PyTorch
defaults, zero biases in its MLPs).
"""
from configs import common
from configs import object_discovery

NORMS = ("weighted_mean", "layer_norm", "weighted_sum", "batch_norm")
SLOTS = (7, 11)


def get_config(arg=None):
  arg = common.parse_arg(arg, norm="weighted_mean", slots=7, seed=0, runlocal=False)
  common.check_choice("norm", arg.norm, NORMS)
  common.check_choice("slots", arg.slots, SLOTS)
  config = object_discovery.build(
      "clevr10_krimmel", f"update_norm={arg.norm},seed={arg.seed},runlocal={int(arg.runlocal)}")
  if not arg.runlocal:
    config.model.slot_attention.num_slots = arg.slots
  return config
