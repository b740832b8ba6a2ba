"""The model library: encoders and modalities, the frozen LM, connectors and their placements, the injection hooks,
the EPALM module, its factory and checkpoints (docs/architecture.md)."""
