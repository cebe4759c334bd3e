r"""Tetrominoes object discovery: SA paper (Locatello et al., 2020) Table 1.

  python main.py --config=configs/tetrominoes.py:attention=softmax,seed=0 \
      --workdir=workdirs/tetrominoes_sa_0

Arguments: attention=softmax|sinkhorn|mesh, update_norm=..., seed=<int>, runlocal=1.
Evaluation only: add --config.mode=eval (test split, records 60000-60320).

Data: 35x35 images, 3 objects (4 slots); train records 0-60000. Model: 4 x 5x5 convs of 32
channels, full-resolution broadcast decoder, slot size 64, slot MLP 128, 3 iterations. Batch
64, Adam 4e-4, warm-up 10k, decay 0.5 per 100k, 500k steps, clipping 0.1 (MESH reference;
the SA paper does not clip).

Published: SA paper Table 1, SA FG-ARI 99.5 +- 0.2 (%). No published SA-SH / SA-MESH number.

Runtime: about 7.5 h for SA on one V100 (SA supplement). CPU: not practical (runlocal=1: about
a minute).

Initialisation: framework_defaults="keras" (docs/reference_defaults.md):
the Slot Attention reference (TensorFlow/Keras) of SA paper Table 1.
"""
from configs import object_discovery


def get_config(arg=None):
  return object_discovery.build("tetrominoes", arg)
