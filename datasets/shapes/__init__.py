"""Procedural dSprites-like shapes (no download)."""
