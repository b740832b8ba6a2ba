"""Decoding of media files into model inputs; one module per modality."""
