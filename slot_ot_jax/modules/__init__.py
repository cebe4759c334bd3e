"""Flax Linen modules: SlotAttention and the model parts built around it.

  attention     SlotAttention (SA, SA-SH, SA-EMD, SA-MESH and the learned variants), SlotMLP
  models        encoders, position embedding, spatial-broadcast decoders, autoencoder, heads
  video_model   the two-frame video model (slot transition between frames)
  vit           a ViT feature extractor (DINOSAUR's frozen backbone)
  defaults      initialisers and LayerNorm epsilons per framework (field framework_defaults)

Modules import only `slot_ot_jax.transport` of ours.
"""
