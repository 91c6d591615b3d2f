"""What transformers does with a GGUF file, for checking Finch against it by hand (never run by CI: it needs
torch, transformers and a real model file).

    ~/.cache/peer/bin/pip install torch transformers gguf     # the peer's environment (../shared/peers)
    ~/.cache/peer/bin/python scripts/reference/transformers_gguf.py FILE.gguf --text eval.txt [--seq-len 256]
        [--windows 4] [--prompt "The capital of France is"] [--new-tokens 24] [--tokenize "text" ...]

Prints one JSON object: for each --tokenize text (no special tokens added), the ids of the model's original
Hugging Face tokenizer, rebuilt with the `tokenizers` library from the GGUF's vocabulary and merges and the
pre-tokenizer its `tokenizer.ggml.pre` stands for (SmolLM2's: digits one by one, then byte-level), and the ids of
transformers' GGUF tokenizer (which leaves the pre-tokenizer's digit split out); the loss `finch eval --data eval.txt --seq-len N --max-windows W` computes (non-overlapping windows of
N tokens of the text as the original tokenizer splits it, each predicting tokens 1… from those before, mean over every predicted token), and the
greedy continuation of --prompt. `from_pretrained(folder, gguf_file=…)` dequantises through gguf-py.
"""
import argparse
import json
import os

import gguf
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("gguf")
p.add_argument("--text")
p.add_argument("--seq-len", type=int, default=256)
p.add_argument("--windows", type=int, default=4)
p.add_argument("--prompt")
p.add_argument("--new-tokens", type=int, default=24)
p.add_argument("--tokenize", nargs="*", default=[])
a = p.parse_args()



def original_tokenizer(path):
    """The tokenizer.json the GGUF's tokenizer was converted from (byte-level BPE models only)."""
    reader = gguf.GGUFReader(path)

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    pre = bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    known = {"smollm": [pre_tokenizers.Digits(individual_digits=True), byte_level],
             "starcoder": [pre_tokenizers.Digits(individual_digits=True), byte_level],
             "gpt2": [byte_level], "default": [byte_level]}
    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    types = reader.fields["tokenizer.ggml.token_type"]
    types = [int(types.parts[i][0]) for i in types.data]
    t = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(tokens)},
                             merges=[tuple(m.split(" ", 1)) for m in merges]))
    t.pre_tokenizer = pre_tokenizers.Sequence(known[pre])
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken(s, special=True, normalized=False) for s, k in zip(tokens, types) if k == 3])
    return t


folder, name = os.path.split(os.path.abspath(a.gguf))
original = original_tokenizer(a.gguf)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
out = {"tokenize": [original.encode(t, add_special_tokens=False).ids for t in a.tokenize],
       "tokenize_transformers_gguf": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in a.tokenize]}
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
model.eval()
torch.set_num_threads(2)
with torch.no_grad():
    if a.text:
        ids = original.encode(open(a.text, encoding="utf-8").read(), add_special_tokens=False).ids
        total, count = 0.0, 0
        starts = list(range(0, len(ids) - a.seq_len + 1, a.seq_len))[: a.windows]
        for s in starts:
            window = torch.tensor([ids[s:s + a.seq_len]])
            loss = model(window, labels=window).loss.item()
            total += loss * (a.seq_len - 1)
            count += a.seq_len - 1
        out.update({"loss": total / count, "windows": len(starts), "seq_len": a.seq_len, "text_tokens": len(ids)})
    if a.prompt:
        prompt = torch.tensor([original.encode(a.prompt).ids])
        generated = model.generate(prompt, max_new_tokens=a.new_tokens, do_sample=False)
        out.update({"prompt_ids": prompt[0].tolist(), "greedy": generated[0, prompt.shape[1]:].tolist()})
print(json.dumps(out))
