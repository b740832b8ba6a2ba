"""Few-shot integration of a new modality: stages, tuning and the study (`python -m epalm.studies.fewshot`, docs/fewshot.md)."""
