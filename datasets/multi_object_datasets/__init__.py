"""DeepMind Multi-Object Datasets read from their original GZIP TFRecord files."""
