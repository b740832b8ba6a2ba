"""Tiny instruct-LM tokenizers with the chat templates of their families, built offline: byte-level BPE trained on
the synthetic corpus, with Mistral's `[INST]` template, Llama 3's headers or Qwen2's ChatML (the templates' shape as
the hub's tokenizer_config.json files have them, trimmed of tool use). `save_chat_tokenizer(style, folder)` -> size."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from epalm.demo.synthetic.text_corpus import build_text_corpus

MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}{%- set sys = messages[0]['content'] + '\\n\\n' %}"
    "{%- set msgs = messages[1:] %}{%- else %}{%- set sys = '' %}{%- set msgs = messages %}{%- endif %}"
    "{{- bos_token }}{%- for m in msgs %}"
    "{%- if m['role'] == 'user' %}{{- '[INST] ' + (sys if loop.first else '') + m['content'] + ' [/INST]' }}"
    "{%- elif m['role'] == 'assistant' %}{{- ' ' + m['content'] + eos_token }}{%- endif %}{%- endfor %}")
LLAMA3 = (
    "{{- bos_token }}{%- for m in messages %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}")
QWEN2 = (
    "{%- for m in messages %}{%- if loop.first and m['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# style: (template, special tokens, bos, eos, pad)
STYLES = {
    "mistral": (MISTRAL, ["<unk>", "<s>", "</s>"], "<s>", "</s>", None),
    "llama3": (LLAMA3, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                        "<|eot_id|>"], "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
    "qwen2": (QWEN2, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>"),
}
WORDS = ["Write a short caption.", "You are a helpful assistant.", "Answer the question using a single word or phrase.",
         "user assistant system"]


def save_chat_tokenizer(style: str, folder: Path) -> int:
    template, specials, bos, eos, pad = STYLES[style]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(build_text_corpus(0, 600) + WORDS * 20, trainer)
    if bos:  # plain text starts with BOS, as these tokenizers encode it (Qwen2 has none)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad,
                                   chat_template=template)
    fast.save_pretrained(folder)
    return len(fast)
