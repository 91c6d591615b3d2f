"""How far float32 rounding alone can move each family's five AdamW steps (reference.json's `adamw`), so that
Finch is held to the reference as tightly as float32 arithmetic allows and no tighter. Writes
FAMILY/adamw-sensitivity.json beside each family made by make_fixtures.py.

    python3 adamw_sensitivity.py        # with torch, transformers and peft (as make_fixtures.py)

The reference trajectory is float64. An engine computing in float32 gets gradients off by about PyTorch's own
float32 error (reference.json's `float32_gradient_error`: per tensor, the largest error relative to the largest
entry). With lr 1e-2 and eps 1e-8, AdamW moves every entry by about lr whatever its gradient's size, so an entry
whose gradient is near zero changes direction with that error, and the trajectory parts. This script reruns the
float64 trajectory RUNS times, each time with every gradient entry perturbed by a uniform error of up to that
tensor's float32 error times its largest entry (a different draw each run and step), and records the largest
deviation from the unperturbed trajectory seen in any run: per loss (before each step, then the final one) and per
trained tensor (its largest entry-wise difference).
"""
import json
import os

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ["qwen2", "mistral", "gpt-neox", "gpt-neo", "cohere"]
RUNS = 8


def trajectory(family, reference, generator):
    adamw, window, windows = reference["adamw"], reference["window"], reference["windows"]
    ids = reference["eval_token_ids"]
    batch = torch.tensor([ids[w * window:(w + 1) * window] for w in range(windows)])
    root = os.path.join(HERE, "..", family)
    base = AutoModelForCausalLM.from_pretrained(os.path.join(root, "base"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(root, "lora"), is_trainable=True).double()
    trainable = [(name.replace(".default", ""), p) for name, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=adamw["lr"], betas=tuple(adamw["betas"]),
                                  eps=adamw["eps"], weight_decay=adamw["weight_decay"])
    errors = reference["float32_gradient_error"]
    losses = []
    for _ in range(adamw["steps"]):
        optimizer.zero_grad()
        out = model(batch, labels=batch)
        losses.append(out.loss.item())
        out.loss.backward()
        if generator is not None:
            for key, p in trainable:
                bound = errors[key] * p.grad.abs().max()
                p.grad.add_((torch.rand(p.grad.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], adamw["max_grad_norm"])
        optimizer.step()
    with torch.no_grad():
        losses.append(model(batch, labels=batch).loss.item())
    return losses, {key: p.detach().clone() for key, p in trainable}


for family in FAMILIES:
    reference = json.load(open(os.path.join(HERE, "..", family, "reference.json")))
    losses, tensors = trajectory(family, reference, None)
    expected = reference["adamw"]["losses_before_each_step_then_final"]
    assert max(abs(a - b) for a, b in zip(losses, expected)) < 1e-9, family  # the reference's own trajectory
    loss_spread = [0.0] * len(losses)
    tensor_spread = {key: 0.0 for key in tensors}
    for run in range(RUNS):
        perturbed_losses, perturbed = trajectory(family, reference, torch.Generator().manual_seed(run))
        loss_spread = [max(s, abs(a - b)) for s, a, b in zip(loss_spread, perturbed_losses, losses)]
        for key in tensors:
            tensor_spread[key] = max(tensor_spread[key], (perturbed[key] - tensors[key]).abs().max().item())
    result = {"runs": RUNS, "perturbation": "uniform, up to float32_gradient_error x the tensor's largest gradient entry",
              "loss_spread": loss_spread, "tensor_spread": tensor_spread}
    json.dump(result, open(os.path.join(HERE, "..", family, "adamw-sensitivity.json"), "w"), indent=1)
    print(family, "loss spread", " ".join(f"{s:.1e}" for s in loss_spread), "largest tensor spread",
          f"{max(tensor_spread.values()):.1e}")
