"""Makes dora/llama-gqa, dora/gpt2 and dora/llama-gqa-embedding in Tests/Fixtures: PEFT DoRA adapters
(LoraConfig(use_dora=True)) over the ../llama-gqa/base and ../gpt2/base models, and PEFT's own numbers for them.

    python3 make_fixtures.py        # with torch, transformers and peft installed (../../../../shared/peers)

For each base: `adapter/`, a DoRA adapter of rank 4, alpha 8 on every projection (GPT-2: c_attn, c_proj, c_fc,
fan_in_fan_out as PEFT sets it for Conv1D; llama-gqa-embedding: embed_tokens, q_proj and v_proj, so the token table
has a magnitude per embedding dimension), with A and B drawn N(0, 0.3) and each magnitude its weight norm times
1 + N(0, 0.1), so that every part of the DoRA formula shows; `merged.safetensors`, the base weights after PEFT's
merge_and_unload (float32); `reference.json` and `reference.safetensors`:
- `loss`: PEFT's mean next-token loss in float32 over the fixture's 4 windows of 48 eval tokens;
- `grad.KEY` (safetensors): the gradients of that loss for every lora_A, lora_B and lora_magnitude_vector, computed
  in float64 and stored as float32, with `float32_gradient_error` (PyTorch float32's own error relative to each
  tensor's largest entry) in reference.json;
- `merged_loss`: the loss of the merged float32 model.
"""
import json
import os

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
# fixture folder → (base family, targets)
TARGETS = {"llama-gqa": ("llama-gqa", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
           "gpt2": ("gpt2", ["c_attn", "c_proj", "c_fc"]),
           "llama-gqa-embedding": ("llama-gqa", ["embed_tokens", "q_proj", "v_proj"])}


def loss_of(model, batch):
    return model(batch, labels=batch).loss


for name, (family, targets) in TARGETS.items():
    base_dir = os.path.join(HERE, "..", family, "base")
    reference = json.load(open(os.path.join(HERE, "..", family, "reference.json")))
    window, windows, ids = reference["window"], reference["windows"], reference["eval_token_ids"]
    batch = torch.tensor([ids[w * window:(w + 1) * window] for w in range(windows)])
    out = os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, use_dora=True))
    torch.manual_seed(11)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_A" in pname or "lora_B" in pname or "lora_embedding_" in pname:
                p.normal_(0, 0.3)
        for pname, p in model.named_parameters():
            if "lora_magnitude_vector" in pname:
                p.mul_(1 + 0.1 * torch.randn(p.shape))
    model.eval()
    model.save_pretrained(os.path.join(out, "adapter"))
    os.remove(os.path.join(out, "adapter", "README.md"))
    result = {"family": family, "targets": targets, "window": window, "windows": windows}
    with torch.no_grad():
        result["loss"] = loss_of(model, batch).item()
    loss_of(model, batch).backward()
    float32_gradients = {n.replace(".default", ""): p.grad.double().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    model64 = model.double()
    loss_of(model64, batch).backward()
    tensors, errors = {}, {}
    for name, p in model64.named_parameters():
        if not p.requires_grad:
            continue
        key = name.replace(".default", "")
        truth = p.grad.detach()
        tensors["grad." + key] = truth.float().contiguous()
        errors[key] = float((float32_gradients[key] - truth).abs().max() / truth.abs().max())
    result["float32_gradient_error"] = errors
    save_file(tensors, os.path.join(out, "reference.safetensors"))

    model32 = model64.float()
    merged = model32.merge_and_unload()
    with torch.no_grad():
        result["merged_loss"] = loss_of(merged, batch).item()
    state = merged.state_dict()
    if "lm_head.weight" in state and "transformer.wte.weight" in state and state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr():
        del state["lm_head.weight"]  # GPT-2's head is the token table (transformers saves it once too)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(out, "merged.safetensors"))
    json.dump(result, open(os.path.join(out, "reference.json"), "w"), indent=1)
    print(name, "loss", result["loss"], "merged", result["merged_loss"], "largest float32 gradient error",
          max(errors.values()))
