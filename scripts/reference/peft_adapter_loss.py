"""PEFT's loss for an adapter folder Finch wrote (LoRA, DoRA or prefix tuning), to check by hand that PEFT reads
it as Finch does (never run by CI: it needs torch, transformers and peft).

    .build/release/finch eval --model BASE --adapter RUN/adapter --data TEXT --seq-len N --max-windows W
    ~/.cache/peer/bin/python scripts/reference/peft_adapter_loss.py BASE RUN/adapter TEXT --seq-len N --max-windows W

The text is tokenised by the base folder's tokenizer (no special tokens added) and cut into non-overlapping
windows of N tokens, each predicting tokens 1… from those before; the loss is the mean over every predicted token,
as `finch eval` computes it for a plain-text file.
"""
import argparse

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("base")
p.add_argument("adapter")
p.add_argument("text")
p.add_argument("--seq-len", type=int, default=256)
p.add_argument("--max-windows", type=int, default=4)
a = p.parse_args()
tokenizer = AutoTokenizer.from_pretrained(a.base)
ids = tokenizer(open(a.text).read(), add_special_tokens=False)["input_ids"]
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(a.base, dtype=torch.float32), a.adapter).eval()
total, count = 0.0, 0
with torch.no_grad():
    for w in range(min(a.max_windows, len(ids) // a.seq_len)):
        chunk = torch.tensor([ids[w * a.seq_len:(w + 1) * a.seq_len]])
        logits = model(chunk).logits[0, :-1].double()
        total += torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum").item()
        count += a.seq_len - 1
print(f"PEFT loss {total / count:.6f} over {count} predicted tokens (use_dora: {model.peft_config['default'].use_dora if hasattr(model.peft_config['default'], 'use_dora') else '-'})")
