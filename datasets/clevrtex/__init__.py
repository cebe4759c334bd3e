"""ClevrTex read from its official release (png images, flat png masks, json metadata)."""
