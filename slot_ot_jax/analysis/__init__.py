"""Figures and logged-scalar readers of the papers' analyses. May import any other
package of ours; nothing in the library imports it.

  figures           MESH paper figures (entropy, tie breaking, gradient paths)
  attention_figure  attention maps per iteration (MESH Fig. 2 / App. J)
  event_files       TensorBoard event files to learning-curve tables
"""
