"""CLEVR v1.0 read from its official release (png images, scene json files)."""
