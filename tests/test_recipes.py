"""Every neighbour's recipe (configs/recipes/) runs offline on tiny random stand-ins of its architectures, saved to
folders with their processor configs and tokenizers (`--set` swaps the names): 3 steps of training, the checkpoint,
reloaded and evaluated; stage 2 starts from stage 1 (`--init_from`). And each recipe's memory estimate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, OPTConfig, OPTForCausalLM

from epalm.demo.synthetic.build import build_image_dataset
from epalm.demo.synthetic.image_pairs import build_image_pairs
from epalm.models.language_models.tokenizer import load_tokenizer
from epalm.training import count_parameters, memory_estimate
import epalm.training.run as entry
from tests.tiny_encoders import clip_vision
from tests.tiny_run import build_word_tokenizer
from tests.tiny_tokenizers import save_chat_tokenizer

RECIPES = Path(__file__).resolve().parent.parent / "configs" / "recipes"
TINY_DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256)
COMMON = ["mixed_precision='no'", "train.max_steps=3", "train.batch_size=4", "train.grad_accum_steps=1",
          "train.num_workers=0", "train.max_text_len=64", "train.warmup_steps=1", "eval.batch_size=4",
          "eval.max_length=40", "task.val_split=", "task.max_eval_samples=3"]


def _save_lm(folder: Path, model, tokenizer_style: str | None) -> str:
    """The LM stand-in and its tokenizer in one folder, as a hub repo holds them."""
    if tokenizer_style is None:
        build_word_tokenizer(folder)
    else:
        save_chat_tokenizer(tokenizer_style, folder)
    vocab = len(load_tokenizer(str(folder)))  # with `</a>`
    model(vocab).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    image = root / "image"
    build_image_dataset(image, seed=0, n_train=8, n_val=1, n_test=3, questions_per_image=1, progress=False)
    pairs = build_image_pairs(image, root / "pairs", seed=0, n_train=8, n_test=3)
    torch.manual_seed(0)
    lms = {
        "opt": _save_lm(root / "opt", lambda v: OPTForCausalLM(OPTConfig(
            hidden_size=32, ffn_dim=64, num_hidden_layers=3, num_attention_heads=4, word_embed_proj_dim=32,
            vocab_size=v, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=1)), None),
        "mistral": _save_lm(root / "mistral", lambda v: MistralForCausalLM(MistralConfig(
            **TINY_DECODER, vocab_size=v, bos_token_id=1, eos_token_id=2)), "mistral"),
        "vicuna": _save_lm(root / "vicuna", lambda v: LlamaForCausalLM(LlamaConfig(
            **TINY_DECODER, vocab_size=v, bos_token_id=1, eos_token_id=1)), None),  # Vicuna's: no chat template
    }
    return {"root": root, "image": image, "pairs": pairs, "lms": lms, "clip": clip_vision(root / "clip")["name"]}


def _run(recipe: str, sets: list[str], output: Path, *extra: str) -> dict:
    argv = ["--config", str(RECIPES / recipe), "--output_dir", str(output), *extra]
    for item in COMMON + sets:
        argv += ["--set", item]
    return entry.main(argv)


def _train_reload_evaluate(recipe: str, sets: list[str], root: Path, *extra: str) -> Path:
    run = root / recipe.removesuffix(".yaml")
    trained = _run(recipe, sets, run, *extra)
    assert trained["steps"] == 3 and (run / "checkpoints" / "last" / "trainable" / "model.safetensors").is_file()
    reloaded = _run(recipe, sets, root / f"{run.name}_eval", "--evaluate", "--checkpoint",
                    str(run / "checkpoints" / "last" / "trainable"))
    assert reloaded["test"]["num_predictions"] == reloaded["test"]["num_samples"] == 3
    return run


def _clip(stand_ins) -> list[str]:
    return [f"model.encoders.image.name={stand_ins['clip']}"]


def test_epalm_recipe(stand_ins):
    sets = [f"model.lm.name={stand_ins['lms']['opt']}", f"task.data_dir={stand_ins['image']}",
            "task.train_split=karpathy_train", "model.encoders.image.name=vit_base_patch16_224",
            "model.encoders.image.pretrained=false",
            "model.encoders.image.model_kwargs={img_size: 32, patch_size: 8, embed_dim: 48, depth: 6, num_heads: 3}",
            "model.start_layer_idx=0", "model.end_layer_idx=3"]
    _train_reload_evaluate("epalm.yaml", sets, stand_ins["root"])


def test_linear_modality_alignment_recipe(stand_ins):
    sets = [f"model.lm.name={stand_ins['lms']['mistral']}", f"task.data_dir={stand_ins['image']}",
            f"train.feature_cache_dir={stand_ins['root'] / 'cache'}", *_clip(stand_ins)]
    _train_reload_evaluate("linear_modality_alignment.yaml", sets, stand_ins["root"])


def _chat_rows(stand_ins) -> list[str]:
    return [f"task.data_dir={stand_ins['pairs']}", f"task.media_root={stand_ins['image'] / 'COCO' / 'images'}"]


def test_multi_token_recipe_in_two_stages(stand_ins):
    sets = [f"model.lm.name={stand_ins['lms']['mistral']}", *_chat_rows(stand_ins), *_clip(stand_ins)]
    first = _train_reload_evaluate("multi_token_stage1.yaml", sets, stand_ins["root"])
    second = _train_reload_evaluate("multi_token_stage2.yaml", sets, stand_ins["root"], "--init_from", str(first))
    saved = json.loads((second / "checkpoints" / "last" / "trainable" / "epalm_config.json").read_text())
    assert saved["model"]["lm"]["train"] == "lora" and saved["model"]["lm"]["lora"]["r"] == 64


def test_llava15_recipe_in_two_stages(stand_ins):
    lm = [f"model.lm.name={stand_ins['lms']['vicuna']}", *_clip(stand_ins)]
    first = _train_reload_evaluate("llava15_stage1.yaml", [*lm, f"task.data_dir={stand_ins['image']}"],
                                   stand_ins["root"])
    second = _train_reload_evaluate("llava15_stage2.yaml", [*lm, *_chat_rows(stand_ins)], stand_ins["root"],
                                    "--init_from", str(first))
    assert (second / "checkpoints" / "last" / "trainable" / "lm" / "model.safetensors").is_file()  # full LM


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml") if p.name != "dmi.yaml"))
def test_every_recipe_has_a_memory_estimate(recipe):
    report = memory_estimate.main(["--config", str(RECIPES / recipe)])
    assert report["total_gb"] > report["frozen_weights_gb"] > 0 and report["activations_gb"] > 0
    assert report["trainable_parameters"] > 0 and report["tokens_per_sample"] > 64


def test_the_estimate_counts_parameters_as_the_model_builds_them():
    """eP-ALM on OPT-2.7B + ViT-B/16: the counts of the whole model built on the meta device."""
    report = memory_estimate.main(["--config", str(RECIPES / "epalm.yaml")])
    built = count_parameters.main(["--lm", "opt-2.7b", "--encoder", "vit_base_patch16_224", "--mlp"])
    assert report["trainable_parameters"] == built.trainable
    assert report["lm_parameters"] + report["encoder_parameters"] + built.trainable == built.total


def test_recipes_name_the_neighbours_real_models():
    names = {path.stem: yaml.safe_load(path.read_text()) for path in RECIPES.glob("*.yaml")}
    assert names["llava15_stage1"]["model"]["encoders"]["image"]["name"] == "openai/clip-vit-large-patch14-336"
    assert names["multi_token_stage1"]["model"]["lm"]["name"] == "mistralai/Mistral-7B-Instruct-v0.1"
    assert names["dmi"]["lm"] == "meta-llama/Llama-3.2-1B-Instruct"


def test_dmi_recipe_runs_the_few_shot_study_in_the_chat_format(stand_ins, tmp_path):
    """DMI's recipe is a few-shot study config: its stages (3 steps each) trained and saved, then a second call
    reloads them from their checkpoints and evaluates the generated adapters again."""
    from epalm.studies.fewshot.__main__ import main as study
    from tests.tiny_encoders import clap_audio, open_clip, xclip_vision

    root = stand_ins["root"]
    llama = _save_lm(root / "llama32", lambda v: LlamaForCausalLM(LlamaConfig(
        **TINY_DECODER, vocab_size=v, bos_token_id=0, eos_token_id=4)), "llama3")
    tiny = {"image": ("image", {"n_train": 8, "n_val": 1, "n_test": 1, "questions_per_image": 1},
                      {"name": open_clip(tmp_path / "siglip", trunk="test_vit3")["name"]}),
            "audio": ("audio", {"n_train": 8, "n_val": 1, "n_test": 1},
                      {"name": clap_audio(tmp_path / "clap")["name"], "sample_rate": 16000}),
            "video": ("video", {"n_train": 8, "n_val": 1, "n_test": 1, "questions_per_video": 1},
                      {"name": xclip_vision(tmp_path / "xclip")["name"], "num_frames": 4})}
    sets = [f"out_dir={tmp_path / 'study'}", f"lm={llama}", "new.sensor.build_options={n_train: 12, n_val: 2, n_test: 3}",
            "projector={width: 32, hidden: 64, tokens: 1, rank: 4}", "pretrain.steps=3", "pretrain.batch_size=4",
            "hypernetwork={steps: 3, queries: 2, shots_min: 2, shots_max: 4, pooling: attention}",
            "study={shots: [4], seeds: [0], methods: [hypernetwork], steps: 3, batch_size: 4, eval_items: 3, "
            "max_new_tokens: 4, workers: 1, reference_steps: 0}"]
    for name, (build, options, encoder) in tiny.items():
        sets += [f"seen.{name}.data_dir=", f"seen.{name}.build={build}", f"seen.{name}.build_options={options}"]
        sets += [f"seen.{name}.encoder.{key}={value}" for key, value in encoder.items()]
        if name == "video":
            sets.append("seen.video.train_split=train")
    argv = ["study", "--config", str(RECIPES / "dmi.yaml"), *[x for s in sets for x in ("--set", s)]]
    first = study(argv)
    trained = {"stage1_projector", "stage2_hypernetwork"}
    assert trained <= set(first["seconds"])  # both stages trained (the time each took)
    again = study([*argv, "--set", "study.eval_items=2"])  # a new evaluation of the stages saved above
    assert not trained & set(again["seconds"])  # both loaded from their checkpoints
    assert (tmp_path / "study" / "study" / "summary.json").is_file()
