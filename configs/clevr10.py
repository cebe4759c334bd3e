r"""Train on CLEVR6 with 7 slots, evaluate on CLEVR10 with 11 slots: 003 Fig. 1, SA paper §4.1.

  python main.py --config=configs/clevr10.py:update_norm=weighted_sum,seed=0 \
      --workdir=workdirs/clevr6_weighted_sum_0
  # Evaluation only, of this or of a configs/clevr6.py workdir (same model):
  python main.py --config=configs/clevr10.py:update_norm=weighted_sum \
      --workdir=workdirs/clevr6_weighted_sum_0 --config.mode=eval

Arguments: attention=softmax|sinkhorn|mesh, update_norm=auto|weighted_mean|layer_norm|
weighted_sum|batch_norm (003: baseline, layer norm, weighted sum, scalar batch norm),
seed=<int>, runlocal=1.

Training is configs/clevr6.py with random horizontal flips (003 §5.1). Evaluation runs on the
CLEVR10 test split (records 70000-70320, up to 10 objects) with 11 slots, and reports
FG-ARI / FG-mIoU per object count (fg_ari_objects1..10, 003 Fig. 1c) and per slot count
(fg_ari_slots7..13, Fig. 1a-b), next to the 11-slot totals.

Published: 003 reports these as curves (Fig. 1), not tables; SA paper §4.1 evaluates its
CLEVR6 model with 11 slots on CLEVR10 without a table entry. No number to compare exactly.

Runtime: as CLEVR6 (about 5.5 days on one V100 for SA), plus evaluations with 7 extra slot
counts. CPU: not practical (runlocal=1: about a minute).

Initialisation: framework_defaults="keras" (docs/reference_defaults.md):
the Slot Attention reference (TensorFlow/Keras), SA paper §4.1.
"""
from configs import object_discovery


def get_config(arg=None):
  return object_discovery.build("clevr10", arg)
