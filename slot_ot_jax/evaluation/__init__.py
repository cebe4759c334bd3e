"""Metrics and evaluation sweeps (no models, no training).

  metrics         ARI / FG-ARI, mIoU, temporal consistency, reconstruction metrics
  set_prediction  Hungarian losses and average precision at distance thresholds
  cardinality     slot-count / object-count generalisation sweeps
  visualize       images of slots and masks for summaries and figures
"""
