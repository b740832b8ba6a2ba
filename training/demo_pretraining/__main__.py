"""python -m training.demo_pretraining [--only tokenizer lm vit timesformer ast sensor] [--seed N] [--out DIR] [--force]"""
from __future__ import annotations

import argparse
import logging

from training.demo_pretraining.build import COMPONENTS, FOLDERS, ensure_demo_models
from training.demo_pretraining.settings import REPORT_FILE
from training.demo_pretraining.shipped import DEFAULT_OUT
from training.demo_pretraining.summary import summary_lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.demo_pretraining", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=COMPONENTS, default=list(COMPONENTS),
                        help="which models to build (the LM also builds a missing tokenizer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder of the models (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild the chosen models even when present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    models = ensure_demo_models(args.out, only=args.only, seed=args.seed, force=args.force)
    for component in COMPONENTS:
        folder = models.out_dir / FOLDERS[component]
        if component not in args.only or not (folder / REPORT_FILE).exists():
            continue
        status = "built" if component in models.built else "already present, not rebuilt"
        print(f"{folder} ({status})")
        for line in summary_lines(component, models.report(component)):
            print("  " + line)


if __name__ == "__main__":
    main()
