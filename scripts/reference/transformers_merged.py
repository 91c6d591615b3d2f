"""Loads merged Hugging Face folders that `finch export --format hf` wrote with transformers itself, and gives the
loss each fixture's reference.json holds for PEFT's merge, for checking by hand that transformers reads what Finch
writes (never run by CI: it needs torch and transformers).

    for f in llama-gqa gpt2 qwen2 mistral gpt-neox gpt-neo cohere; do
        .build/release/finch export --model Tests/Fixtures/$f/base --adapter Tests/Fixtures/$f/lora --out /tmp/merged/$f
    done
    ~/.cache/peer/bin/python scripts/reference/transformers_merged.py /tmp/merged Tests/Fixtures

For each family folder under the first argument: `AutoModelForCausalLM.from_pretrained` (float32, no warnings about
missing or unexpected weights allowed), the mean next-token loss over the fixture's windows of its evaluation ids
(as `lora_merged_loss` was made), and the difference from `lora_merged_loss`.
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM

merged_root, fixtures = sys.argv[1], sys.argv[2]
worst = 0.0
for family in sorted(os.listdir(merged_root)):
    reference = json.load(open(os.path.join(fixtures, family, "reference.json")))
    model, info = AutoModelForCausalLM.from_pretrained(os.path.join(merged_root, family), dtype=torch.float32,
                                                       output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    ids, window = reference["eval_token_ids"], reference["window"]
    losses = []
    with torch.no_grad():
        for w in range(reference["windows"]):
            chunk = torch.tensor([ids[w * window:(w + 1) * window]])
            losses.append(model(chunk, labels=chunk).loss.item())
    loss = sum(losses) / len(losses)
    difference = abs(loss - reference["lora_merged_loss"])
    worst = max(worst, difference)
    print(f"{family:10s} {type(model).__name__:24s} loss {loss:.6f}  PEFT merged {reference['lora_merged_loss']:.6f}  "
          f"|diff| {difference:.1e}" + (f"  loading: {problems}" if problems else ""))
print(f"largest |diff| {worst:.1e}")
