"""Connectors: the trainable bridge from a frozen encoder's features to the frozen LM.

Two placements: `layers` (eP-ALM: the tokens replace a slot's hidden state at the injection plan's LM
layers, models/injection.py) and `input` (an input prefix: the tokens are LM input embeddings).
Every module of this folder registers its connector in CONNECTORS at the first lookup; a third type
is one more file (docs/model.md).
"""
from epalm.models.connectors.base import CONNECTORS, PLACEMENTS, Connector, build_connector

__all__ = ["CONNECTORS", "PLACEMENTS", "Connector", "build_connector"]
