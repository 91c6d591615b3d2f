"""Makes the per-example clipping fixture: Opacus' DP-SGD gradient before noise, for LoRA over the llama-gqa fixture.

    pip install opacus==1.6.0 torch transformers peft
    python3 make_clipping.py

Model: ../llama-gqa/base with PEFT's ../llama-gqa/lora adapter (q_proj and v_proj, dropout 0), in float64, wrapped
in Opacus' GradSampleModule (hooks, loss_reduction "mean"). Batch: the 4 windows of 48 eval ids of
../llama-gqa/reference.json, cut to 4 lengths (48, 40, 33, 27) with a prompt of 5, 9, 13 and 17 positions that
trains nothing: each example's loss is its mean next-token cross-entropy over its own targets, and the batch's loss
the mean of those (so each per-sample gradient is the gradient of that example's loss alone).

DPOptimizer (noise_multiplier 0, max_grad_norm C, expected_batch_size 4) then clips each per-sample gradient to C
over all LoRA tensors together (Opacus' flat clipping: factor min(1, C / (norm + 1e-6))) and sums them.
C is halfway between the second and third largest of the four norms: two examples are clipped, two are not.

clipping.json: the examples (tokens, targets per position), each example's loss and gradient norm, C.
clipping.safetensors: `sum.KEY`, Opacus' clipped sum (p.summed_grad) for each LoRA tensor, and `grad.KEY`, the
gradient it hands the optimizer before noise (the sum / expected batch size).
"""
import json
import os
import warnings

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

warnings.simplefilter("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..")
LENGTHS, PROMPTS = [48, 40, 33, 27], [5, 9, 13, 17]

reference = json.load(open(os.path.join(FIXTURES, "llama-gqa", "reference.json")))
window, ids = reference["window"], reference["eval_token_ids"]
examples = []
for i, (length, prompt) in enumerate(zip(LENGTHS, PROMPTS)):
    tokens = ids[i * window:i * window + length]
    targets = [-100] * length
    for t in range(prompt, length - 1):
        targets[t] = tokens[t + 1]
    examples.append({"tokens": tokens, "targets": targets})

model = PeftModel.from_pretrained(
    AutoModelForCausalLM.from_pretrained(os.path.join(FIXTURES, "llama-gqa", "base"), dtype=torch.float32),
    os.path.join(FIXTURES, "llama-gqa", "lora"), is_trainable=True).double()
names = [name for name, p in model.named_parameters() if p.requires_grad]
gsm = GradSampleModule(model, loss_reduction="mean")

# One padded batch: padding positions have target -100 and sit after each example's tokens (attention is causal,
# so they change nothing before them).
batch, longest = len(examples), max(LENGTHS)
tokens = torch.zeros(batch, longest, dtype=torch.long)
targets = torch.full((batch, longest), -100, dtype=torch.long)
for i, e in enumerate(examples):
    tokens[i, :len(e["tokens"])] = torch.tensor(e["tokens"])
    targets[i, :len(e["targets"])] = torch.tensor(e["targets"])
logits = gsm(input_ids=tokens).logits
per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                              reduction="none", ignore_index=-100).reshape(batch, longest)
kept = (targets != -100).double()
per_example = (per_token * kept).sum(1) / kept.sum(1)
per_example.mean().backward()

params = [p for p in gsm.parameters() if p.requires_grad]
norms = torch.stack([p.grad_sample.reshape(batch, -1).norm(2, dim=-1) for p in params], dim=1).norm(2, dim=1)
clip = float(norms.sort().values[1:3].mean())
optimizer = DPOptimizer(torch.optim.SGD(params, lr=0.0), noise_multiplier=0.0, max_grad_norm=clip,
                        expected_batch_size=batch)
optimizer.pre_step()

tensors = {}
for name, p in zip(names, params):
    key = name.replace(".default", "")
    tensors["sum." + key] = p.summed_grad.float().contiguous()
    tensors["grad." + key] = p.grad.float().contiguous()
save_file(tensors, os.path.join(HERE, "clipping.safetensors"))
json.dump({"model": "llama-gqa/base + llama-gqa/lora", "dtype": "float64", "opacus": "1.6.0",
           "max_grad_norm": clip, "expected_batch_size": batch, "examples": examples,
           "losses": per_example.tolist(), "norms": norms.tolist()},
          open(os.path.join(HERE, "clipping.json"), "w"))
print("norms", norms.tolist(), "clip", clip, len(params), "LoRA tensors")
