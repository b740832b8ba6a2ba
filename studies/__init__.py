"""Studies built on the trainer: the LM-size ablation sweep, projection probes, few-shot integration."""
