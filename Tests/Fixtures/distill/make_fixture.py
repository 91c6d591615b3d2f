"""Makes the distillation fixture: the loss Finch's `distill:` recipe section trains on, written out in PyTorch, and
its gradients, for a student and a teacher from the other fixtures (they share llama-gqa's tokenizer).

    python3 make_fixture.py        # with torch, transformers and peft (../../../../shared/peers)

Student: ../llama-gqa/base with PEFT's ../llama-gqa/lora adapter. Teacher: ../mistral/base, frozen. Tokens: the 4
windows of 48 eval ids of ../llama-gqa/reference.json; targets: the next token, except the first 12 positions of
each window (a prompt) and the last, which have none (-100). With student logits z, teacher logits t, kept
positions K, temperature T and weight alpha:

    loss = alpha · T² · mean_K Σ_v softmax(t/T)_v · (log softmax(t/T)_v − log softmax(z/T)_v)
           + (1 − alpha) · mean_K cross_entropy(z, target)

reference.json holds the tokens, targets, T, alpha and the loss for alpha 0.7 and T 2 (and alpha 0, 1 beside it);
reference.safetensors the gradient of the first loss for every LoRA tensor (`grad.KEY`), all computed in float64.
"""
import json
import os

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..")
TEMPERATURE, ALPHA, PROMPT = 2.0, 0.7, 12

reference = json.load(open(os.path.join(FIXTURES, "llama-gqa", "reference.json")))
window, windows, ids = reference["window"], reference["windows"], reference["eval_token_ids"]
tokens = torch.tensor([ids[w * window:(w + 1) * window] for w in range(windows)])
targets = torch.full_like(tokens, -100)
targets[:, PROMPT:-1] = tokens[:, PROMPT + 1:]

student = PeftModel.from_pretrained(
    AutoModelForCausalLM.from_pretrained(os.path.join(FIXTURES, "llama-gqa", "base"), dtype=torch.float32),
    os.path.join(FIXTURES, "llama-gqa", "lora"), is_trainable=True).double()
teacher = AutoModelForCausalLM.from_pretrained(os.path.join(FIXTURES, "mistral", "base"), dtype=torch.float32).double().eval()


def distillation_loss(alpha, temperature):
    z = student(tokens).logits.reshape(-1, 768)
    with torch.no_grad():
        t = teacher(tokens).logits.reshape(-1, 768)
    kept = targets.reshape(-1) != -100
    z, t, y = z[kept], t[kept], targets.reshape(-1)[kept]
    log_q = torch.log_softmax(z / temperature, dim=-1)
    log_p = torch.log_softmax(t / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(z, y)
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


result = {"teacher": "mistral/base", "student": "llama-gqa/base + llama-gqa/lora", "temperature": TEMPERATURE,
          "alpha": ALPHA, "tokens": tokens.reshape(-1).tolist(), "targets": targets.reshape(-1).tolist(),
          "batch": windows, "length": window, "dtype": "float64"}
with torch.no_grad():
    result["loss_alpha_0"] = distillation_loss(0.0, TEMPERATURE).item()
    result["loss_alpha_1"] = distillation_loss(1.0, TEMPERATURE).item()
loss = distillation_loss(ALPHA, TEMPERATURE)
loss.backward()
result["loss"] = loss.item()
tensors = {"grad." + name.replace(".default", ""): p.grad.float().contiguous()
           for name, p in student.named_parameters() if p.requires_grad}
save_file(tensors, os.path.join(HERE, "reference.safetensors"))
json.dump(result, open(os.path.join(HERE, "reference.json"), "w"))
print("loss", result["loss"], "alpha 0", result["loss_alpha_0"], "alpha 1", result["loss_alpha_1"], len(tensors), "gradients")
