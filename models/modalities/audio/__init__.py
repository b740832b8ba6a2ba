"""The audio modality: waveform decoding, the Kaldi fbank, its encoders."""
