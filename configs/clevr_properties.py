r"""CLEVR object property prediction: MESH Tables 2 and 6, Slot Attention §4.2 (CLEVR10).

  python main.py --config=configs/clevr_properties.py:attention=mesh \
      --workdir=workdirs/clevr_properties_mesh

Arguments: attention=softmax|sinkhorn|emd|mesh, detach_slots=1 (default; the dagger rows of
MESH Table 2, Chang et al. 2022) or 0 (MESH Table 6), seed=<int>, runlocal=1 (a one-minute CPU
smoke run on the offline sprites). Evaluation only: --config.mode=eval.

Data: CLEVR v1.0 (datasets/clevr_v1; manual download of CLEVR_v1.0.zip, prepared with
`python datasets/prepare.py clevr_v1/full --manual_dir=DIR`): images resized to 128x128
without a crop, scaled to [-1, 1]; targets per object (x, y, z) from [-3, 3] to [0, 1], size,
material, shape, colour one-hot, presence: 19 dims, zero-padded to 10 objects. Training on
train[512:] (69,488 scenes; train[:512] is the monitoring set), evaluation on the full
validation split (15,000 scenes). Model (SA supplement Tables 3, 7): 4 x 5x5 convs of 64
channels, strides 1,2,2,1 (32x32 tokens), position embedding, LayerNorm, MLP 64-64; SlotAttention
with 10 slots, 3 iterations, slot size 64, MLP 128; per-slot MLP 64 -> 19 with a sigmoid.
Hungarian Huber loss (delta 1, averaged over the 19 dims, matched costs summed per image).
Adam 4e-4, warm-up 1k, decay 0.5 every 50k, batch 512, 150k steps (SA supplement Table 10c).

Published AP in % (MESH paper, mean over 5 seeds; inf / 1 / 0.5 / 0.25 / 0.125 / 0.0625; train
time as published, on the authors' GPU):
  Table 2 (detach_slots=1)
    SA       94.3 / 85.7 / 77.2 / 53.1 / 16.7 / 4.0    2.2 h
    SA-SH    98.9 / 97.7 / 95.2 / 83.3 / 38.5 / 10.0   2.3 h
    SA-EMD   99.3 / 98.1 / 95.9 / 85.8 / 42.0 / 11.4   9.3 h
    SA-MESH  99.4 / 99.2 / 98.9 / 91.1 / 47.6 / 12.5   2.4 h
  Table 6 (detach_slots=0)
    SA       89.1 / 85.7 / 73.3 / 35.4 / 9.0 / 2.0     2.4 h
    SA-SH    95.6 / 94.0 / 84.5 / 41.3 / 10.4 / 2.5    2.5 h
    SA-EMD   99.2 / 98.7 / 97.0 / 82.4 / 34.0 / 8.3    9.7 h
    SA-MESH  99.2 / 99.1 / 98.8 / 88.3 / 40.8 / 10.6   2.5 h
  SA (original, Locatello et al. 2020): 94.3 / 86.7 / 56.0 / 10.8 / 0.9 / -.
Expected GPU time: about the published 2.2-2.5 h (SA, SA-SH, SA-MESH) and 9-10 h (SA-EMD, POT
on the host) per run on one modern GPU; not measured here (no GPU run was made). Not
practical on CPU except runlocal=1.

Initialisation: framework_defaults="torch" (docs/reference_defaults.md):
the MESH reference (PyTorch) of Tables 2 and 6.
"""
from configs import property_prediction


def get_config(arg=None):
  return property_prediction.build("clevr", arg)
