"""The offline demo: its runner, synthetic worlds and data sets, and the tiny models pretrained for it."""
