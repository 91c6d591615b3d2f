"""Renders each chat template here with transformers' apply_chat_template, for Finch's renderer to match byte for
byte.

    ~/.cache/peer/bin/python Tests/Fixtures/chat-templates/make_expected.py Tests/Fixtures/chat-templates

Writes expected.json: for each template, its special tokens and, for each conversation, the rendered text with
and without the generation prompt, or the error message transformers raised.
"""
import glob
import json
import os
import sys

from transformers import PreTrainedTokenizerFast

folder = sys.argv[1] if len(sys.argv) > 1 else "."
here = os.path.dirname(os.path.abspath(__file__))
tokenizer_file = os.path.join(here, "..", "gpt2", "base", "tokenizer.json")
special = {  # bos, eos as each family's tokenizer names them
    "smollm2": ("<|im_start|>", "<|im_end|>"), "qwen2.5": ("<|endoftext|>", "<|im_end|>"),
    "llama-3.2": ("<|begin_of_text|>", "<|eot_id|>"), "phi-3.5": ("<s>", "<|endoftext|>"),
    "gemma-2": ("<bos>", "<eos>"), "mistral-nemo": ("<s>", "</s>"),
}
conversations = {
    "system-multi-turn": [
        {"role": "system", "content": "You are a terse assistant. Answer in JSON."},
        {"role": "user", "content": "Wake me at six thirty tomorrow"},
        {"role": "assistant", "content": '{"intent":"set_alarm","time":"06:30","day":"tomorrow"}'},
        {"role": "user", "content": "  and turn the volume to 40 \n"},
        {"role": "assistant", "content": '{"intent":"set_volume","level":40}'},
    ],
    "multi-turn": [
        {"role": "user", "content": "Hello! Café, 日本語, emoji 🙂 and \"quotes\" 'too'."},
        {"role": "assistant", "content": "Hi.\n\nTwo lines,\ttabs and trailing space "},
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "1, 2, 3"},
    ],
    "one-turn": [{"role": "user", "content": "What is 2+2?"}],
}
expected = {}
for path in sorted(glob.glob(os.path.join(folder, "*.jinja"))):
    name = os.path.basename(path)[:-len(".jinja")]
    template = open(path, encoding="utf-8").read()
    bos, eos = special[name]
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, bos_token=bos, eos_token=eos)
    cases = []
    for title, messages in conversations.items():
        for prompt in (False, True):
            case = {"conversation": title, "add_generation_prompt": prompt}
            try:
                case["text"] = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                             add_generation_prompt=prompt, date_string="06 Dec 2026")
            except Exception as error:  # the template's raise_exception
                case["error"] = str(error)
            cases.append(case)
    expected[name] = {"bos_token": bos, "eos_token": eos, "cases": cases}
with open(os.path.join(folder, "expected.json"), "w", encoding="utf-8") as f:
    json.dump({"conversations": conversations, "templates": expected}, f, ensure_ascii=False, indent=1)
    f.write("\n")
