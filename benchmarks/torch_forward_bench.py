"""The peer side of `finch eval` throughput: transformers' forward pass (no gradients) over the same
windows of the same text and weights.

    python torch_forward_bench.py --make-model DIR      # a random W1-shaped LLaMA folder (seed 0)
    python torch_forward_bench.py --model DIR --data TEXT [--seq-len 256 --batch-size 8 --threads 2]

Prints one JSON line: loss, tokens/s. Run `finch eval --model DIR --data TEXT --seq-len 256 --json`
in the same sitting and compare the two tokens/s.
"""
import argparse, json, shutil, sys, time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--make-model")
p.add_argument("--tokenizer", help="tokenizer.json to copy into the made model folder")
p.add_argument("--model")
p.add_argument("--data")
p.add_argument("--seq-len", type=int, default=256)
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
torch.set_num_threads(a.threads)

if a.make_model:
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=288, intermediate_size=768, num_hidden_layers=6, num_attention_heads=6,
                      num_key_value_heads=6, vocab_size=2048, max_position_embeddings=512, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(a.make_model)
    if a.tokenizer:
        shutil.copy(a.tokenizer, Path(a.make_model) / "tokenizer.json")
    sys.exit(0)

model = LlamaForCausalLM.from_pretrained(a.model, attn_implementation="sdpa").eval()
tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(a.model) / "tokenizer.json"))
ids = tok(Path(a.data).read_text(), add_special_tokens=False)["input_ids"]
n = len(ids) // a.seq_len
windows = torch.tensor(ids[: n * a.seq_len]).view(n, a.seq_len)
with torch.no_grad():
    model(input_ids=windows[: a.batch_size], labels=windows[: a.batch_size])  # warm-up
    t = time.perf_counter()
    total, count = 0.0, 0
    for i in range(0, n, a.batch_size):
        batch = windows[i : i + a.batch_size]
        loss = model(input_ids=batch, labels=batch).loss.item()
        total += loss * batch.shape[0] * (a.seq_len - 1)
        count += batch.shape[0] * (a.seq_len - 1)
    dt = time.perf_counter() - t
print(json.dumps({"peer": "transformers", "loss": total / count, "windows": n, "tokens_per_s": n * a.seq_len / dt,
                  "threads": torch.get_num_threads()}))
