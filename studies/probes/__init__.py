"""Projection probes (`python main.py probe`, docs/probes.md)."""
