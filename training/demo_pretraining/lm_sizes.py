"""Smaller siblings of the demo LM, for the LM-size ablation on the demo data (docs/ablations.md).

    python -m training.demo_pretraining.lm_sizes [--force]

Each is pretrained exactly as `opt-demo` (same text-only corpus, seed, steps and learning rate, the shipped
tokenizer), only narrower and shallower, into `models/demo_weights/<name>`; the sizes already there are
skipped. `configs/ablation/demo_sizes/*.yaml` point at them and at `opt-demo` (the largest).
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import replace

from training.demo_pretraining.build import build_lm
from training.demo_pretraining.settings import LMSettings
from training.demo_pretraining.shipped import DEFAULT_OUT

SIZES = {
    "opt-demo-h32-l2": replace(LMSettings(), hidden_size=32, num_layers=2, num_heads=4, ffn_dim=128),
    "opt-demo-h64-l3": replace(LMSettings(), hidden_size=64, num_layers=3, num_heads=8, ffn_dim=256),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.demo_pretraining.lm_sizes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--force", action="store_true", help="rebuild sizes that are already there")
    args = parser.parse_args(argv)
    for name in args.only:
        target = DEFAULT_OUT / name
        if target.exists() and not args.force:
            print(f"{target} already present, not rebuilt")
            continue
        if target.exists():
            shutil.rmtree(target)
        print(f"built {build_lm(DEFAULT_OUT, seed=0, settings=SIZES[name], folder=name)}")


if __name__ == "__main__":
    main()
