"""Input pipelines: tf.data from TFDS, preprocessing ops, readers of released formats.

  input_pipeline  TFDS / prepared-TFRecord pipelines, per-process sharding, offline data
  preprocessing   crops, resizes, object-count filters as the papers apply them
  movi            MOVi-C/D readers and DINOSAUR feature files

Imports nothing else of ours.
"""
