"""The video modality: PyAV frame sampling, its transform, its encoders."""
