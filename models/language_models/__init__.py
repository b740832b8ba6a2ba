"""The frozen decoder LM: loading, decoder layouts per family, LoRA / full training, its checkpoint files."""
