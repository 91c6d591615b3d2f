"""llama.cpp's loss on a fixture family's GGUF file, to hold Finch's GGUF reading and writing to what llama.cpp runs
(by hand; never run by CI: it needs llama-cpp-python, built from its PyPI source as ../shared/peers describes).

    ~/.cache/llamacpp/bin/python scripts/reference/llamacpp_fixture_loss.py Tests/Fixtures/gpt-neox \\
        Tests/Fixtures/gguf/gpt-neox.gguf [--lora ADAPTER.gguf]

Prints the mean next-token loss over the fixture's windows of its evaluation ids (each window evaluated from an
empty cache, as reference.json's losses were made by transformers), beside reference.json's `base_loss` and
`lora_merged_loss`.
"""
import argparse
import json
import os

import numpy as np
from llama_cpp import Llama

p = argparse.ArgumentParser()
p.add_argument("fixture")
p.add_argument("gguf")
p.add_argument("--lora")
a = p.parse_args()
reference = json.load(open(os.path.join(a.fixture, "reference.json")))
ids, window = reference["eval_token_ids"], reference["window"]
model = Llama(model_path=a.gguf, lora_path=a.lora, logits_all=True, verbose=False, n_ctx=max(window, 64), n_threads=1)
losses = []
for w in range(reference["windows"]):
    chunk = ids[w * window:(w + 1) * window]
    model.reset()
    model.eval(chunk)
    logits = np.array(model.scores[:len(chunk)], dtype=np.float64)[:-1]
    top = logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    losses.append(float((log_sum - logits[np.arange(len(chunk) - 1), chunk[1:]]).mean()))
print(json.dumps({"llama_cpp_loss": sum(losses) / len(losses), "base_loss": reference["base_loss"],
                  "lora_merged_loss": reference["lora_merged_loss"]}))
