"""CLEVRER-S/L two-frame examples (manual download of the official release)."""
