"""The image modality: Pillow decoding, timm transforms, its encoders."""
