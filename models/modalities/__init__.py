"""Modalities as plugins: how a media file becomes a frozen encoder's input, and how it is written in text.

    from epalm.models.modalities import get_modality
    image = get_modality("image")          # placeholder "<image>", data key "images"
    tensor = image.preprocessor(encoder, encoder_cfg, train=False)(path, rng=None)

Every module of this folder is a plugin and registers itself when first needed; a plugin elsewhere (a
research repository, a test) is imported by name with `load_plugins(["package.module"])`, which the run
config's `plugins` key does. See docs/modalities.md for the API and the worked example.
"""
from epalm.models.modalities.base import (
    MODALITIES,
    Modality,
    Preprocessor,
    get_modality,
    load_plugins,
    modality_names,
    placeholders,
    register_modality,
)

__all__ = ["MODALITIES", "Modality", "Preprocessor", "get_modality", "load_plugins", "modality_names",
           "placeholders", "register_modality"]
