"""Connectors: the trainable bridge from a frozen encoder's features to the frozen LM.

Each connector declares its placement (models/connectors/placements.py): LAYERS (eP-ALM: the tokens replace
a slot's hidden state at the injection plan's LM layers) or INPUT (the tokens are LM input embeddings).
Every module of this folder registers its connector in CONNECTORS at the first lookup; a third type
is one more file (docs/model.md).
"""
from epalm.models.connectors.base import CONNECTORS, Connector, build_connector
from epalm.models.connectors.placements import INPUT, LAYERS, Placement

__all__ = ["CONNECTORS", "INPUT", "LAYERS", "Connector", "Placement", "build_connector"]
