r"""ClevrTex object discovery: MESH paper Table 4, App. F.3.

  python main.py --config=configs/clevrtex.py:attention=sinkhorn,seed=0 \
      --workdir=workdirs/clevrtex_sinkhorn_0

Arguments: attention=softmax|sinkhorn|mesh, update_norm=..., seed=<int>, runlocal=1.
Evaluation only: add --config.mode=eval (official test split, images 0-4999). SA-MESH with
its defaults is also configs/clevrtex_mesh.py.

Data: clevrtex/full, official centre crop, resized to 64x64 (not 128), up to 10 objects (11
slots); evaluation during training on the validation split. Model: the Multi-dSprites model
with 64 conv channels, slot size 128, slot MLP 256, 3 iterations. Batch 64, Adam 4e-4,
warm-up 10k, decay 0.5 per 100k, clipping 0.1, 530 epochs of 40,000 images (331,250 steps).

Published (%, 5 seeds), MESH Table 4:
  SA       FG-ARI 52.8   FG-mIoU 26.3
  SA-SH    FG-ARI 70.8   FG-mIoU 35.3
  SA-MESH  FG-ARI 79.0   FG-mIoU 43.2

Runtime: not given by the paper; a GPU day or more (331k steps at 64x64 with 64 channels).
CPU: not practical (runlocal=1: about a minute). Without the data the run stops at once with
the preparation instructions (datasets/README.md).
"""
from configs import object_discovery


def get_config(arg=None):
  return object_discovery.build("clevrtex", arg)
