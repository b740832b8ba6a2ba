"""A tiny, complete training setup on the synthetic image data: data, tokenizer, config file."""
from __future__ import annotations

from pathlib import Path

import yaml
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from epalm.demo.synthetic.build import build_image_dataset
from epalm.demo.synthetic.text_corpus import build_text_corpus

SPECIALS = ["<pad>", "</s>", "<unk>", "</a>"]


def build_word_tokenizer(folder: Path) -> int:
    """A word-level tokenizer over the synthetic corpus (BOS prepended like OPT's); returns its size."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(build_text_corpus(0, 1500), trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", additional_special_tokens=["</a>"])
    fast.save_pretrained(folder)
    return len(fast)


def build_tiny_setup(root: Path) -> dict:
    data = root / "data"
    build_image_dataset(data, seed=0, n_train=48, n_val=12, n_test=13, questions_per_image=2, progress=False)
    vocab = build_word_tokenizer(root / "tokenizer")
    return {"data": data, "tokenizer": root / "tokenizer", "vocab": vocab}


def tiny_config(setup: dict, path: Path, task: str = "vqa", task_keys: dict | None = None, **train) -> Path:
    """A YAML config for a tiny random OPT + tiny random ViT run on the synthetic data; `task_keys` override the
    task section's (e.g. `{"val_split": "", "test_split": ""}`: training only), `train` the train section's."""
    reader = {"vqa": dict(reader="vqa_v2"), "caption": dict(reader="coco_caption", train_split="train",
                                                             val_split="val", test_split="test")}[task]
    config = {
        "model": {
            "lm": {"name": "opt", "random_init": True, "tokenizer": str(setup["tokenizer"]),
                   "config_overrides": {"hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 3,
                                        "num_attention_heads": 4, "word_embed_proj_dim": 32,
                                        "vocab_size": setup["vocab"], "max_position_embeddings": 64,
                                        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1}},
            "encoders": {"image": {"type": "timm_vit", "name": "vit_tiny_patch16_224",
                                   "model_kwargs": {"img_size": 48, "patch_size": 8, "embed_dim": 48, "depth": 3,
                                                    "num_heads": 3}}},
            "injected_hidden_states": 2, "start_layer_idx": 0, "end_layer_idx": 3, "prompt_len": 3,
        },
        "task": {"data_dir": str(setup["data"]), **reader, **(task_keys or {})},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-2, "prompt_lr": 1e-2, "warmup_steps": 2,
                  "num_workers": 0, "log_every": 1, **train},
        "eval": {"batch_size": 5, "num_beams": 1, "max_length": 12},
    }
    path.write_text(yaml.safe_dump(config))
    return path
