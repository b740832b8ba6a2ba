"""Speed benchmarks of the eP-ALM model: `python -m benchmarks.run --shape ref-small` (docs/benchmarks.md)."""
