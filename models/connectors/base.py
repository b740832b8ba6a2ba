"""The interface every connector implements, and how one is built from the model config."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from epalm.common.config_io import from_dict
from epalm.common.registry import Registry
from epalm.models.connectors.placements import Placement
from epalm.models.encoders.base import PerceptionEncoder
from epalm.models.language_models.frozen_lm import FrozenLanguageModel

if TYPE_CHECKING:  # the model config imports the encoder and LM configs, not the connectors: no cycle at run time
    from epalm.models.config import ModelConfig


@dataclass
class NoOptions:
    """A connector without options of its own (`model.connector_options` must be empty)."""


class Connector(nn.Module, ABC):
    """Maps the frozen encoder's features of M media instances, `(M, F, d_enc)`, to what the LM receives: F = K
    vectors (one per block read, readout cls or mean) or F = N patch tokens (readout patches).

    placement: where the tokens enter the LM (models/connectors/placements.py): LAYERS: returns `(M, K, d_lm)`,
        the visual token of each injection layer of one slot position (d_lm: the decoder's hidden width); INPUT:
        returns `(M, N, d_embed)`, N LM input embeddings (d_embed: the input-embedding width, before OPT's
        project_in). A connector that writes somewhere new brings a new Placement.
    tokens_per_instance: positions one instance takes (1 slot, or N input tokens).
    Options: a dataclass of the connector's own keys, read strictly from `model.connector_options`.
    """

    placement: ClassVar[Placement]
    Options: ClassVar[type] = NoOptions
    tokens_per_instance: int

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: ModelConfig, options: Any, encoder_width: int, lm: FrozenLanguageModel,
                    num_features: int) -> Connector:
        """Build for one encoder of width `encoder_width` giving `num_features` vectors per instance (K, or the
        N patch tokens of readout patches), feeding `lm`."""

    @abstractmethod
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`(M, F, d_enc)` encoder features -> `(M, K, d_lm)` (layers) or `(M, N, d_embed)` (input)."""


CONNECTORS: Registry[type[Connector]] = Registry("connector", discover=("epalm.models.connectors",))


def connector_class(name: str) -> type[Connector]:
    return CONNECTORS.get(name)


def build_connector(cfg: ModelConfig, encoder: PerceptionEncoder, lm: FrozenLanguageModel) -> Connector:
    cls = connector_class(cfg.connector)
    options = from_dict(cls.Options, dict(cfg.connector_options), "model.connector_options")
    num_features = encoder.features_per_instance(cfg.readout, cfg.injected_hidden_states, cfg.patch_tokens)
    connector = cls.from_config(cfg, options, encoder.hidden_size, lm, num_features)
    if not isinstance(connector.placement, Placement):
        raise TypeError(f"connector '{cfg.connector}': placement {connector.placement!r} is not a Placement "
                        "(models/connectors/placements.py)")
    return connector
