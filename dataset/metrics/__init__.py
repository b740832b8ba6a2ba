"""Evaluation metrics; import from the modules (this package re-exports nothing, so that the module
`caption_metrics` is never shadowed by its function of the same name):

- vqa_accuracy: official VQA v2 accuracy, evaluator versions "2021" (default) and "2017"
- exact_match: exact-match QA accuracy after the VQA answer normalisation (GQA, MSRVTT-QA, MSVD-QA)
- caption_metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE through pycocoevalcap
- score: `python -m epalm.dataset.metrics.score` scores prediction files (docs/evaluation.md)
"""
