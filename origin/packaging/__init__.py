"""Packaging: the asset catalog, manifest edits and the per-segment pipeline."""
