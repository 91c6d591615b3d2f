"""Compares Finch's next-token logits with llama.cpp's on the same GGUF file (and LoRA adapter), position by
position. Never run by CI: it needs llama-cpp-python (../shared/peers/README.md) and the files.

    .build/release/finch logits --model FILE.gguf [--adapter PEFT_DIR] --text "…" > finch.json
    ~/.cache/llamacpp/bin/python scripts/reference/compare_llamacpp.py FILE.gguf finch.json [--lora ADAPTER.gguf]

Prints one JSON object: the largest absolute difference of any logit, the largest logit magnitude, the mean
absolute difference, and at how many positions both pick the same most likely token.
"""
import argparse
import json

import numpy as np
from llama_cpp import Llama

p = argparse.ArgumentParser()
p.add_argument("gguf")
p.add_argument("finch_logits")
p.add_argument("--lora")
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()

finch = json.load(open(a.finch_logits))
ids, ours = finch["ids"], np.array(finch["logits"], dtype=np.float64)
kwargs = {"lora_path": a.lora} if a.lora else {}
llm = Llama(model_path=a.gguf, n_ctx=max(512, len(ids)), n_batch=512, n_threads=a.threads, logits_all=True,
            type_k=0, type_v=0,  # a float32 key/value cache (llama.cpp keeps float16 by default)
            verbose=False, **kwargs)
llm.eval(ids)
theirs = np.array(llm.scores[: len(ids)], dtype=np.float64)
difference = np.abs(ours - theirs)
print(json.dumps({
    "positions": len(ids), "vocabulary": ours.shape[1],
    "max_abs_difference": float(difference.max()), "mean_abs_difference": float(difference.mean()),
    "max_abs_logit": float(np.abs(theirs).max()),
    "same_argmax": int((ours.argmax(1) == theirs.argmax(1)).sum()),
}))
