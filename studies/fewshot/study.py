"""The sample-efficiency study: every method at every k and seed on the new modality, scored on fixed items.

Each run writes `<out_dir>/study/<method>/k<k>-seed<seed>/<dataset>-results.json` (metrics, predictions,
config, the k shots, losses, seconds) and is skipped when that file exists with the same run fingerprint, so an
interrupted study resumes. Runs go to `study.workers` processes (one torch thread each). The summary
(`summary.json`, `summary.md`: the tables and whether the goal is met) and `curve.png` go to `<out_dir>/study/`
(`study-val/` when `study.eval_split` is val).

`run_tuning` chooses each training method's learning rate on the validation split (`tune` section): every lr of
`tune.lrs` at every k of `tune.shots`, seed `tune.seed`; runs under `<out_dir>/tune/`, the choice in its
`summary.json`.
"""
from __future__ import annotations

import json
import multiprocessing
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from epalm.common.atomic_io import write_text_atomic
from epalm.studies.fewshot.checkpoints import fingerprint
from epalm.studies.fewshot.config import FewShotConfig, config_dict
from epalm.studies.fewshot.evaluation import score
from epalm.studies.fewshot.methods import Shots, run_method
from epalm.studies.fewshot.results import read_results, write_results
from epalm.studies.fewshot.stages import STAGE1, STAGE2, Prepared, prepare, stage_fingerprints
from epalm.studies.fewshot.summary import summarise

FULL = "all"  # the reference runs' k: every (item, caption) pair of the training split


@dataclass(frozen=True)
class RunSpec:
    method: str
    shots: int | str
    seed: int
    steps: int
    lr: float

    def folder(self, tuning: bool = False) -> str:
        return f"{self.method}/k{self.shots}-seed{self.seed}" + (f"-lr{self.lr:g}" if tuning else "")


def run_specs(cfg: FewShotConfig) -> list[RunSpec]:
    study = cfg.study
    specs = [RunSpec(method, k, seed, 0 if method == "hypernetwork" else study.steps, study.lr.get(method, 0.0))
             for method in study.methods for k in study.shots for seed in study.seeds]
    if study.reference_steps > 0:
        specs += [RunSpec(name, FULL, study.seeds[0], study.reference_steps, study.lr["scratch"])
                  for name in ("scratch", "blind")]
    return specs


def draw_shots(prepared: Prepared, k: int | str, seed: int) -> tuple[Shots, list]:
    """The first k items of the seed's permutation of the training items (so smaller k are subsets of larger
    ones), each with one caption drawn for it once per seed; FULL: every item with every caption."""
    pool, vectors = prepared.train, prepared.vectors
    if k == FULL:
        pairs = [(i, c) for i in range(len(pool)) for c in range(len(pool.captions[i]))]
    else:
        if k > len(pool):
            raise ValueError(f"k={k} but the new modality has {len(pool)} training items")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(10_000 + seed)).tolist()
        rng = random.Random(f"fewshot-shot-captions/{seed}")
        chosen = {i: rng.randrange(len(pool.captions[i])) for i in order}
        pairs = [(i, chosen[i]) for i in order[:k]]
    items = [i for i, _ in pairs]
    shots = Shots(pool.features[items], [pool.captions[i][c] for i, c in pairs],
                  torch.stack([vectors.vectors[i][c] for i, c in pairs]))
    return shots, [pool.uids[i] for i in items]


# The trained stages each method starts from (a run is redone when one of them changes).
METHOD_STAGES = {"hypernetwork": STAGE2, "hypernetwork_finetuned": STAGE2, "pretrained_finetuned": STAGE1,
                 "lora": STAGE1, "scratch": None, "blind": None, "epalm_injection": None}


def run_fingerprint(cfg: FewShotConfig, spec: RunSpec) -> str:
    values = config_dict(cfg)
    stage = METHOD_STAGES[spec.method]
    uses = stage_fingerprints(cfg)[stage] if stage else {"lm": cfg.lm, "projector": values["projector"],
                                                          **cfg.text_settings()}
    return fingerprint({"stages": uses, "spec": asdict(spec), "new": values["new"],
                        "epalm": values["epalm"], "batch_size": cfg.study.batch_size,
                        "eval": [cfg.study.eval_split, cfg.study.eval_items, cfg.study.max_new_tokens]})


def dataset_name(prepared: Prepared) -> str:
    return prepared.evaluation.split.task


def study_folder(cfg: FewShotConfig) -> Path:
    return Path(cfg.out_dir) / ("study" if cfg.study.eval_split == "test" else "study-val")


def execute(prepared: Prepared, spec: RunSpec, force: bool = False, tuning: bool = False) -> dict[str, Any]:
    cfg = prepared.ctx.cfg
    folder = (Path(cfg.out_dir) / "tune" if tuning else study_folder(cfg)) / spec.folder(tuning)
    run_id = run_fingerprint(cfg, spec)
    previous = None if force else read_results(folder, dataset_name(prepared))
    if previous is not None and previous.get("fingerprint") == run_id:
        return previous
    shots, shot_uids = draw_shots(prepared, spec.shots, spec.seed)
    start, cpu = time.perf_counter(), time.process_time()
    captions, info = run_method(prepared.ctx, spec.method, shots, prepared.evaluation.features, spec.seed, spec.steps,
                                spec.lr)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    metrics = score(prepared.evaluation, captions)
    payload = {
        "dataset": dataset_name(prepared), "split": prepared.evaluation.split.split, "modality": cfg.new_name,
        **asdict(spec), "num_shots": len(shots), "fingerprint": run_id, "metrics": metrics,
        "seconds": {"wall": round(wall, 2), "cpu": round(cpu, 2), "torch_threads": torch.get_num_threads()},
        "loss_first": info["losses"][:5], "loss_last": info["losses"][-5:],
        "shot_pairs": [{"uid": uid, "caption": caption} for uid, caption in zip(shot_uids, shots.captions)]
        if spec.shots != FULL else f"every (item, caption) pair of the {cfg.new_source.train_split} split",
        "predictions": [{"uid": uid, "prediction": text} for uid, text in zip(prepared.evaluation.uids, captions)],
        "config": config_dict(cfg),
    }
    write_results(folder, payload["dataset"], payload)
    return payload


_WORKER: Prepared | None = None


def _start_worker(cfg: FewShotConfig) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = prepare(cfg, train=False, progress=False)


def _run_in_worker(job: tuple[RunSpec, bool, bool]) -> dict[str, Any]:
    return execute(_WORKER, *job)


def run_all(cfg: FewShotConfig, prepared: Prepared, specs: list[RunSpec], force: bool, tuning: bool,
            progress: bool) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(specs), desc="few-shot runs", unit="run", disable=not progress)
    if cfg.study.workers <= 1:
        for spec in specs:
            results.append(execute(prepared, spec, force, tuning))
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")  # fresh processes: no torch thread pool inherited
        with context.Pool(cfg.study.workers, initializer=_start_worker, initargs=(cfg,)) as pool:
            for result in pool.imap_unordered(_run_in_worker, [(spec, force, tuning) for spec in specs]):
                results.append(result)
                bar.update()
    bar.close()
    return results


def run_study(cfg: FewShotConfig, force: bool = False, progress: bool = True) -> dict[str, Any]:
    start = time.perf_counter()
    prepared = prepare(cfg, train=True, force=force, progress=progress)
    runs_start = time.perf_counter()
    results = run_all(cfg, prepared, run_specs(cfg), force, False, progress)
    seconds = {**prepared.seconds, "runs": round(time.perf_counter() - runs_start, 1),
               "total": round(time.perf_counter() - start, 1)}
    summary = summarise(cfg, results, seconds)
    folder = study_folder(cfg)
    write_text_atomic(folder / "summary.json", json.dumps(summary, indent=2, default=str))
    write_text_atomic(folder / "summary.md", summary["markdown"] + "\n")
    summary["curve"] = str(_plot(summary, folder / "curve.png"))
    return summary


def _plot(summary: dict[str, Any], path: Path) -> Path:
    from epalm.studies.fewshot.curve import plot_curve

    return plot_curve(summary, path)


def run_tuning(cfg: FewShotConfig, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Every training method at every lr of `tune.lrs` and k of `tune.shots` on the validation split; the lr with
    the best mean caption attribute accuracy (then CIDEr) per method."""
    cfg = replace(cfg, study=replace(cfg.study, eval_split="val", eval_items=cfg.tune.eval_items))
    prepared = prepare(cfg, train=True, force=force, progress=progress)
    methods = [m for m in cfg.study.methods if m != "hypernetwork"]
    specs = [RunSpec(method, k, cfg.tune.seed, cfg.study.steps, lr)
             for method in methods for k in cfg.tune.shots for lr in cfg.tune.lrs]
    results = run_all(cfg, prepared, specs, force, True, progress)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for result in results:
        cell = table.setdefault(result["method"], {}).setdefault(f"{result['lr']:g}", {})
        for metric in ("attribute_accuracy", "CIDEr"):
            cell.setdefault(metric, []).append(result["metrics"].get(metric) or 0.0)
    means = {m: {lr: {k: sum(v) / len(v) for k, v in cell.items()} for lr, cell in by_lr.items()}
             for m, by_lr in table.items()}
    best = {m: float(max(by_lr, key=lambda lr: (by_lr[lr]["attribute_accuracy"], by_lr[lr]["CIDEr"])))
            for m, by_lr in means.items()}
    summary = {"split": "val", "shots": cfg.tune.shots, "seed": cfg.tune.seed, "steps": cfg.study.steps,
               "mean_over_shots": means, "best_lr": best}
    write_text_atomic(Path(cfg.out_dir) / "tune" / "summary.json", json.dumps(summary, indent=2))
    return summary
