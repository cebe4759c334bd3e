"""The generic trainer and its machinery. It knows experiments only through the Task
interface (`slot_ot_jax.tasks.base`).

  train           train_and_evaluate(config, workdir): jitted, data-parallel steps, evaluation
  checkpointing   orbax checkpoints: save, restore, config compatibility
  optim           optax chains from the config (warmup, decay, clipping)
  launch          one-thread subprocess environments for multi-run scripts
"""
