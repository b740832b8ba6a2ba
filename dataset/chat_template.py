"""How a chat row's messages become LM text: the tokenizer's chat template when it has one, else a plain one.

The plain template writes each turn as the reference writes a QA pair, so that a model trained on VQA-style
text reads one-turn chat rows as it reads questions:

    BOS  user_1 </a> assistant_1 </s>  user_2 </a> assistant_2 </s> ...

(a system turn is written as a user turn). The result is a list of segments `(text, supervised)`: the loss
reads the supervised ones (the assistant turns) only. For generation the last assistant turn is left out
and the text ends where the model must answer (after `</a>`, or the template's generation prompt).
"""
from __future__ import annotations

from epalm.common.errors import ConfigError, DataFormatError
from epalm.models.language_models.tokenizer import QA_SEPARATOR

TEMPLATES = ("auto", "plain", "tokenizer")
TEXT_FORMATS = ("reference", "chat")  # how a QA or caption sample is written (task.text_format)
Segments = list[tuple[str, bool]]


def use_tokenizer_template(tokenizer, template: str) -> bool:
    if template not in TEMPLATES:
        raise ConfigError(f"task.chat_template must be one of {TEMPLATES}, got {template!r}")
    has_one = bool(getattr(tokenizer, "chat_template", None))
    if template == "tokenizer" and not has_one:
        raise ConfigError("task.chat_template: tokenizer, but the LM's tokenizer has no chat template")
    return template == "tokenizer" or (template == "auto" and has_one)


def plain_segments(messages: list[dict[str, str]], eos: str, for_generation: bool) -> Segments:
    """Segments of the plain template; the assistant turns end with `eos` (the collator adds BOS)."""
    turns = messages[:-1] if for_generation else messages
    segments: Segments = []
    for message in turns:
        if message["role"] == "assistant":
            segments.append((message["content"] + eos, True))
        else:
            segments.append((message["content"] + QA_SEPARATOR, False))
    return segments


def template_segments(messages: list[dict[str, str]], tokenizer, for_generation: bool) -> Segments:
    """Segments of the tokenizer's chat template: each assistant turn is the text its rendering adds after the
    generation prompt of the turns before it."""
    render = tokenizer.apply_chat_template
    turns = messages[:-1] if for_generation else messages
    segments: Segments = []
    done = ""
    for k, message in enumerate(turns):
        if message["role"] != "assistant":
            continue
        prompt = render(turns[:k], tokenize=False, add_generation_prompt=True)
        full = render(turns[: k + 1], tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise DataFormatError("the tokenizer's chat template does not render a conversation as a sequence of "
                                  "growing prefixes; use task.chat_template: plain")
        segments += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    if for_generation:
        prompt = render(turns, tokenize=False, add_generation_prompt=True)
        if not prompt.startswith(done):
            raise DataFormatError("the tokenizer's chat template does not render a conversation as a sequence of "
                                  "growing prefixes; use task.chat_template: plain")
        segments.append((prompt[len(done):], False))
    elif len(done) < len(full := render(turns, tokenize=False)):
        segments.append((full[len(done):], False))
    return [(text, supervised) for text, supervised in segments if text]


def chat_segments(messages: list[dict[str, str]], tokenizer, template: str, for_generation: bool) -> Segments:
    if use_tokenizer_template(tokenizer, template):
        return template_segments(messages, tokenizer, for_generation)
    return plain_segments(messages, tokenizer.eos_token, for_generation)


def one_turn(tokenizer, user: str, answer: str | None) -> tuple[str, str]:
    """A QA or caption sample as a one-turn conversation through the tokenizer's chat template (an instruct LM's:
    Mistral's [INST], Llama 3's headers, Qwen2's ChatML): (the prompt, up to the template's generation prompt; the
    answer as the template writes it, its end-of-turn token included; "" when `answer` is None)."""
    use_tokenizer_template(tokenizer, "tokenizer")  # a clear error when the tokenizer has none
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer or ""}]
    segments = template_segments(messages, tokenizer, for_generation=answer is None)
    prompt = "".join(text for text, supervised in segments[:1])
    return prompt, "".join(text for text, supervised in segments if supervised)
