r"""CLEVR6 object discovery: SA paper (Locatello et al., 2020) Table 1; 003 (Krimmel et al.) §5.1.

  python main.py --config=configs/clevr6.py:attention=softmax,seed=0 \
      --workdir=workdirs/clevr6_sa_0

Arguments: attention=softmax|sinkhorn|mesh, update_norm=auto|weighted_mean|layer_norm|
weighted_sum|batch_norm (003's variants), seed=<int>, runlocal=1. Evaluation only: add
--config.mode=eval (test split: the first 320 scenes with <= 6 objects from record 70000);
the same workdir evaluated on CLEVR10 with 11 slots: configs/clevr10.py.

Data: CLEVR with masks, scenes with at most 6 objects, crop rows 29:221, cols 64:256, resize
128x128 (7 slots). Model: 4 x 5x5 convs of 64 channels, 8x8 spatial broadcast with 4 stride-2
transposed convs (64 channels), slot size 64, slot MLP 128, 3 iterations. Batch 64, Adam 4e-4,
warm-up 10k, decay 0.5 per 100k, 500k steps, clipping 0.1 (MESH reference; SA does not clip).

Published: SA paper Table 1, SA FG-ARI 98.8 +- 0.3 (%).

Runtime: about 5.5 days for SA on one V100 (SA supplement). CPU: not practical (runlocal=1:
about a minute).

Initialisation: framework_defaults="keras" (docs/reference_defaults.md):
the Slot Attention reference (TensorFlow/Keras) of SA paper Table 1.
"""
from configs import object_discovery


def get_config(arg=None):
  return object_discovery.build("clevr6", arg)
