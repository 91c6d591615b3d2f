"""Makes this folder: a tiny tied-embedding LLaMA, two PEFT LoRA adapters on embed_tokens + q_proj + v_proj
(`lora/`: the head keeps the base table, PEFT's default; `lora-tied/`: ensure_weight_tying, the head shares the
embedding's adapter), one with a whole trainable copy of the table (`lora-saved-table/`: modules_to_save with
ensure_weight_tying, LoRA on q_proj/v_proj), and PEFT's own logits, loss and gradients for each. Run with torch, transformers and peft installed:

    python3 make_fixture.py

Everything is float32 on CPU and seeded, so the numbers are deterministic.
"""
import json
import os

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                     tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
model = LlamaForCausalLM(config).float().eval()
with torch.no_grad():
    for p in model.parameters():
        if p.dim() > 1:
            p.normal_(0, 0.08)
assert model.lm_head.weight is model.model.embed_tokens.weight
model.save_pretrained("base", safe_serialization=True)

peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                              target_modules=["embed_tokens", "q_proj", "v_proj"]))
with torch.no_grad():
    for name, p in peft_model.named_parameters():
        if "lora_" in name:  # both factors non-zero so the adapter changes the output
            p.normal_(0, 0.3)
peft_model.eval()
peft_model.save_pretrained("lora")
os.remove("lora/README.md")  # PEFT's model-card template



def save_and_run(adapted, folder):
    """Saves the adapter as PEFT does (without its model-card template), then the loss and its gradients."""
    adapted.eval()
    adapted.save_pretrained(folder)
    os.remove(f"{folder}/README.md")
    result = adapted(tokens, labels=tokens)
    result.loss.backward()
    return result


tokens = torch.randint(3, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
with peft_model.disable_adapter(), torch.no_grad():
    base_logits = peft_model(tokens).logits
out = peft_model(tokens, labels=tokens)
out.loss.backward()
tensors = {"tokens": tokens.float(), "base.logits": base_logits[0].contiguous(), "lora.logits": out.logits[0].detach().contiguous()}
state = get_peft_model_state_dict(peft_model)
for name, p in peft_model.named_parameters():
    if p.grad is None:
        continue
    key = name.replace(".default", "")
    assert key in state, key
    tensors["grad." + key] = p.grad.contiguous()
lora_loss = out.loss.item()

# The same targets with ensure_weight_tying: PEFT gives lm_head its own LoRA parameters that share storage with
# the embedding's (lm_head.lora_A = lora_embedding_Bᵀ, lm_head.lora_B = lora_embedding_Aᵀ), so one update changes
# both sides. The gradient of the tied factor is the sum of both parameters' gradients.
model = LlamaForCausalLM.from_pretrained("base").float().eval()
tied = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, ensure_weight_tying=True,
                                        target_modules=["embed_tokens", "q_proj", "v_proj"]))
torch.manual_seed(2)
with torch.no_grad():
    for name, p in tied.named_parameters():
        if "lora_" in name and "lm_head" not in name:
            p.normal_(0, 0.3)
head, table = tied.base_model.model.lm_head, tied.base_model.model.model.embed_tokens
assert torch.equal(head.lora_A["default"].weight, table.lora_embedding_B["default"].T)
out = save_and_run(tied, "lora-tied")
tensors["tied.logits"] = out.logits[0].detach().contiguous()
for name, p in tied.named_parameters():
    if p.grad is None or "lm_head" in name:
        continue
    key = name.replace(".default", "")
    grad = p.grad.clone()
    if key.endswith("lora_embedding_A"):
        grad += head.lora_B["default"].weight.grad.T
    if key.endswith("lora_embedding_B"):
        grad += head.lora_A["default"].weight.grad.T
    tensors["tied.grad." + key] = grad.contiguous()
tied_loss = out.loss.item()

# modules_to_save: a trainable copy of the whole table beside LoRA on q_proj/v_proj, with ensure_weight_tying so
# the head reads the copy too. PEFT saves the copy as `…embed_tokens.weight` and again as `lm_head.weight`.
model = LlamaForCausalLM.from_pretrained("base").float().eval()
saved = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, ensure_weight_tying=True,
                                         target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens"]))
torch.manual_seed(3)
copy = saved.base_model.model.model.embed_tokens.modules_to_save["default"].weight
with torch.no_grad():
    for name, p in saved.named_parameters():
        if "lora_" in name:
            p.normal_(0, 0.3)
    copy.add_(torch.randn_like(copy) * 0.05)  # the copy differs from the base table
out = save_and_run(saved, "lora-saved-table")
tensors["saved.logits"] = out.logits[0].detach().contiguous()
grads = {}
for name, p in saved.named_parameters():
    if p.grad is None:
        continue
    key = name.replace(".modules_to_save.default", "").replace(".default", "")
    key = key.replace("base_model.model.lm_head.weight", "base_model.model.model.embed_tokens.weight")
    grads[key] = grads.get(key, 0) + p.grad  # the head's wrapper shares the copy: one tensor, summed
for key, grad in grads.items():
    tensors["saved.grad." + key] = grad.contiguous()
save_file(tensors, "reference.safetensors")
json.dump({"lora_loss": lora_loss, "tied_loss": tied_loss, "saved_loss": out.loss.item(), "tokens_shape": list(tokens.shape)},
          open("reference.json", "w"), indent=1)
print("losses", lora_loss, tied_loss, out.loss.item(), "tensors", len(tensors), sorted(grads))
