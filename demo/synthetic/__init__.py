"""Synthetic worlds and data sets for the fully offline demo (see docs/demo_data.md)."""
