"""Build the demo's tokenizer, LM, ViT, TimeSformer, AST and sensor encoder into `out_dir`, deterministically from a seed; `ensure_demo_models`
builds only what is missing. Every folder is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer

from epalm.common.errors import ConfigError, did_you_mean
from epalm.demo.pretraining.audio_encoder import AUDIO_DIR, build_ast_demo
from epalm.demo.pretraining.folders import atomic_folder, read_json, write_json
from epalm.demo.pretraining.head_training import AttributeHeads
from epalm.demo.pretraining.images import render_pool, sample_images
from epalm.demo.pretraining.lm import new_opt, pretrain_lm, tokenize_documents
from epalm.demo.pretraining.lm_evaluation import evaluate_lm
from epalm.demo.pretraining.sensor_encoder import SENSOR_DIR, build_sensor_demo
from epalm.demo.pretraining.settings import (ENCODER_FILE, LM_DIR, REPORT_FILE, TOKENIZER_DIR, VIT_DIR,
                                                VIT_WEIGHTS_FILE, LMSettings, TokenizerSettings, ViTSettings)
from epalm.demo.pretraining.shipped import DEFAULT_OUT, encoder_config, lm_config
from epalm.demo.pretraining.timing import Timer
from epalm.demo.pretraining.tokenizer import train_tokenizer, unknown_token_share
from epalm.demo.pretraining.video_encoder import VIDEO_DIR, build_timesformer_demo
from epalm.demo.pretraining.vit import build_pretrained_encoder, cls_features, normalize, pretrain_vit
from epalm.demo.pretraining.vit_evaluation import head_accuracy, linear_probe
from epalm.demo.synthetic.text_corpus import build_text_corpus, tokenizer_training_lines
from epalm.demo.synthetic.worlds import discover_worlds
from epalm.models.encoders import build_encoder
from epalm.models.language_models.frozen_lm import build_language_model
from epalm.models.language_models.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

COMPONENTS = ("tokenizer", "lm", "vit", "timesformer", "ast", "sensor")
FOLDERS = {"tokenizer": TOKENIZER_DIR, "lm": LM_DIR, "vit": VIT_DIR, "timesformer": VIDEO_DIR, "ast": AUDIO_DIR,
           "sensor": SENSOR_DIR}
WORD = re.compile(r"[^\W_]+")  # a corpus word, without the punctuation the tokenizer splits off


@dataclass(frozen=True)
class DemoModels:
    """Where each model is, and which of them this call built (the others were already there)."""

    out_dir: Path
    built: tuple[str, ...]

    @property
    def tokenizer(self) -> Path:
        return self.out_dir / TOKENIZER_DIR

    @property
    def lm(self) -> Path:
        return self.out_dir / LM_DIR

    @property
    def vit(self) -> Path:
        return self.out_dir / VIT_DIR

    @property
    def timesformer(self) -> Path:
        return self.out_dir / VIDEO_DIR

    @property
    def ast(self) -> Path:
        return self.out_dir / AUDIO_DIR

    @property
    def sensor(self) -> Path:
        return self.out_dir / SENSOR_DIR

    def report(self, component: str) -> dict:
        return read_json(self.out_dir / FOLDERS[component] / REPORT_FILE)


def build_tokenizer(out_dir: str | Path, seed: int = 0, settings: TokenizerSettings = TokenizerSettings(),
                    max_length: int = LMSettings().max_positions) -> Path:
    target = Path(out_dir) / TOKENIZER_DIR
    worlds = discover_worlds()
    with Timer() as timer:
        documents = build_text_corpus(seed, settings.n_documents)
        tokenizer = train_tokenizer(documents, settings.vocab_size, max_length)
    words = sorted({word for line in tokenizer_training_lines(documents) for word in WORD.findall(line)})
    one_token = sum(len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1 for word in words)
    report = {
        "seed": seed, "worlds": worlds, "settings": asdict(settings), "vocab_size": len(tokenizer),
        "corpus_words": len(words), "single_token_word_share": round(one_token / len(words), 4),
        "unknown_token_share": unknown_token_share(tokenizer, documents), "timing": timer.as_dict(),
    }
    with atomic_folder(target) as tmp:
        tokenizer.save_pretrained(tmp)
        write_json(tmp / REPORT_FILE, report)
    return target


def build_lm(out_dir: str | Path, seed: int = 0, settings: LMSettings = LMSettings(),
             progress: bool = True, folder: str = LM_DIR) -> Path:
    """Pretrain the OPT with the tokenizer in `out_dir/tokenizer` (which must exist) into `out_dir/folder`,
    saved with a copy of the tokenizer."""
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir / TOKENIZER_DIR)
    worlds = discover_worlds()
    torch.manual_seed(seed)
    with Timer() as corpus_timer:
        documents = build_text_corpus(seed, settings.steps * settings.batch_size, mix=settings.corpus_mix)
        rows = tokenize_documents(tokenizer, documents, settings.max_positions)
    model = new_opt(tokenizer, settings)
    with Timer() as train_timer:
        losses = pretrain_lm(model, rows, tokenizer, settings, seed, progress)
    with Timer() as eval_timer:
        evaluation = evaluate_lm(model, tokenizer, worlds, seed, settings.eval_scenes_per_world,
                                 settings.eval_samples, progress)
    report = {
        "seed": seed, "worlds": worlds, "settings": asdict(settings),
        "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
        "documents": len(documents), "mean_document_tokens": round(sum(map(len, rows)) / len(rows), 2),
        "loss_first_20_steps": round(sum(losses[:20]) / len(losses[:20]), 4),
        "loss_last_20_steps": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "timing": {"corpus": corpus_timer.as_dict(), "training": train_timer.as_dict(),
                   "evaluation": eval_timer.as_dict()},
        "evaluation": evaluation,
    }
    with atomic_folder(out_dir / folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / REPORT_FILE, report)
        # It must load back through the project's own loaders, as the demo will load it.
        reloaded = build_language_model(lm_config(tmp), load_tokenizer(str(tmp))).model
        if reloaded.get_input_embeddings().num_embeddings != model.get_input_embeddings().num_embeddings:
            raise RuntimeError("the saved tokenizer needs more embedding rows than the saved LM has")
    return out_dir / folder


def build_vit(out_dir: str | Path, seed: int = 0, settings: ViTSettings = ViTSettings(),
              progress: bool = True) -> Path:
    out_dir = Path(out_dir)
    with Timer() as render_timer:
        train = render_pool(seed, "train", settings.n_train_images, progress)
        test = render_pool(seed, "test", settings.n_test_images, progress)
    torch.manual_seed(seed)
    encoder = build_pretrained_encoder(settings)
    # The pool's tensors must be what the encoder's own test-time transform makes of the same images.
    samples = sample_images(seed, "test", 4)
    reference = torch.stack([encoder.preprocessing(False)(image) for image in samples])
    preprocessing_gap = (reference - normalize(encoder, test.pixels[:4])).abs().max().item()
    if preprocessing_gap > 1e-5:
        raise RuntimeError(f"ViT pretraining pixels differ from the encoder's preprocessing by {preprocessing_gap}")
    heads = AttributeHeads(encoder.hidden_size, train.classes)
    with Timer() as train_timer:
        losses = pretrain_vit(encoder, heads, train, settings, seed, progress)
    with Timer() as eval_timer:
        accuracy = head_accuracy(encoder, heads, test)
        probe_pool = type(train)(train.pixels[:settings.probe_train_images],
                                 {a: v[:settings.probe_train_images] for a, v in train.labels.items()}, train.classes)
        probe = linear_probe(encoder, probe_pool, test)
    fields = {"type": "timm_vit", "name": settings.name, "model_kwargs": dict(settings.model_kwargs),
              "normalization": "encoder"}
    report = {
        "seed": seed, "settings": asdict(settings), "encoder": fields,
        "parameters": sum(p.numel() for p in encoder.model.parameters()),
        "classes": train.classes, "pixel_mean": list(encoder.mean), "pixel_std": list(encoder.std),
        "preprocessing_max_abs_difference": preprocessing_gap,
        "loss_first_20_steps": round(sum(losses[:20]) / len(losses[:20]), 4),
        "loss_last_20_steps": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "held_out_images": len(test), "held_out_head_accuracy": accuracy,
        "linear_probe_train_images": len(probe_pool), "linear_probe_accuracy": probe,
        "timing": {"rendering": render_timer.as_dict(), "training": train_timer.as_dict(),
                   "evaluation": eval_timer.as_dict()},
    }
    with atomic_folder(out_dir / VIT_DIR) as tmp:
        weights = tmp / VIT_WEIGHTS_FILE
        save_file({k: v.detach().contiguous() for k, v in encoder.model.state_dict().items()}, str(weights),
                  metadata={"format": "pt"})
        write_json(tmp / ENCODER_FILE, fields)
        # It must load back through build_encoder unchanged (timm loads a headless checkpoint non-strictly).
        reloaded = build_encoder(encoder_config(tmp))
        gap = (cls_features(reloaded, test.pixels[:64], 2) - cls_features(encoder, test.pixels[:64], 2)).abs().max()
        if gap > 1e-5:
            raise RuntimeError(f"the saved ViT reloads with different outputs (max difference {gap.item()})")
        write_json(tmp / REPORT_FILE, report)
    return out_dir / VIT_DIR


def ensure_demo_models(out_dir: str | Path = DEFAULT_OUT, only: Sequence[str] = COMPONENTS, seed: int = 0,
                       force: bool = False, progress: bool = True,
                       tokenizer_settings: TokenizerSettings = TokenizerSettings(),
                       lm_settings: LMSettings = LMSettings(),
                       vit_settings: ViTSettings = ViTSettings()) -> DemoModels:
    """Build the requested models that are missing (all of them with `force`); the LM needs the tokenizer."""
    unknown = set(only) - set(COMPONENTS)
    if unknown:
        raise ConfigError(f"unknown demo model(s) {sorted(unknown)}{did_you_mean(min(unknown), COMPONENTS)}; "
                          f"choose from {COMPONENTS}")
    out_dir = Path(out_dir)
    wanted = [c for c in COMPONENTS if c in only or (c == "tokenizer" and "lm" in only)]
    built = []
    for component in wanted:
        folder = out_dir / FOLDERS[component]
        explicit = component in only
        if folder.exists() and not (force and explicit):
            _warn_if_stale(component, folder)
            continue
        if component == "tokenizer":
            build_tokenizer(out_dir, seed, tokenizer_settings, lm_settings.max_positions)
        elif component == "lm":
            build_lm(out_dir, seed, lm_settings, progress)
        elif component == "vit":
            build_vit(out_dir, seed, vit_settings, progress)
        elif component == "timesformer":
            build_timesformer_demo(out_dir, seed, progress=progress)
        elif component == "ast":
            build_ast_demo(out_dir, seed, progress=progress)
        else:
            build_sensor_demo(out_dir, seed, progress=progress)
        built.append(component)
    return DemoModels(out_dir, tuple(built))


def _warn_if_stale(component: str, folder: Path) -> None:
    """Text models built before a world was registered do not know its words: say so (rebuilding is explicit)."""
    report_path = folder / REPORT_FILE
    if component not in ("tokenizer", "lm") or not report_path.exists():
        return
    built_from, registered = read_json(report_path).get("worlds", []), discover_worlds()
    if built_from != registered:
        logger.warning("%s was built from worlds %s but %s are registered now; rebuild it with --force",
                       folder, built_from, registered)
