"""Procedural two-frame shapes videos (no download)."""
