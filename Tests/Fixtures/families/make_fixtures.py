"""Makes qwen2/, mistral/, gpt-neox/, gpt-neo/ and cohere/ in Tests/Fixtures: for each, a tiny random model made by transformers, a
PEFT LoRA adapter on every projection and a PEFT prefix-tuning adapter, the LoRA merged by PEFT,
and PEFT's and transformers' own numbers, in the same layout and conventions as llama-gqa/ (see ../README.md):
reference.json (losses, greedy ids, five AdamW steps) and reference.safetensors (window-0 logits, the LoRA
gradients, the LoRA tensors after the AdamW steps). The tokenizer and eval.txt are llama-gqa's.

    python3 make_fixtures.py        # with torch, transformers and peft installed

Everything is float32 on CPU and seeded, so the numbers are deterministic.
"""
import json
import os
import shutil

import torch
from peft import LoraConfig, PrefixTuningConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import (CohereConfig, CohereForCausalLM, GPTNeoConfig, GPTNeoForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA = os.path.join(HERE, "..", "llama-gqa")
WINDOW, WINDOWS = 48, 4
SHAPE = dict(vocab_size=768, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FAMILIES = {
    # Qwen2: q/k/v biases (o_proj none), rotary base 1e6, tied embeddings as Qwen2.5's small models have them.
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**SHAPE, rope_theta=1_000_000.0, tie_word_embeddings=True,
                                            rms_norm_eps=1e-6, use_sliding_window=False), LLAMA_TARGETS),
    # Mistral: LLaMA with a sliding window (longer here than any sequence, as in Mistral 7B v0.1 at 4096).
    "mistral": (MistralForCausalLM, MistralConfig(**SHAPE, head_dim=16, sliding_window=4096, rope_theta=10_000.0,
                                                  tie_word_embeddings=False, rms_norm_eps=1e-5), LLAMA_TARGETS),
    # GPT-NeoX as Pythia has it: fused query_key_value laid out per head, a quarter of each head rotary, parallel
    # residual, LayerNorm and exact GELU, biases, an untied embed_out.
    "gpt-neox": (GPTNeoXForCausalLM,
                 GPTNeoXConfig(vocab_size=768, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                               num_attention_heads=4, max_position_embeddings=256, rotary_pct=0.25,
                               rotary_emb_base=10_000, use_parallel_residual=True, hidden_act="gelu",
                               tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
                 ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
    # GPT-Neo as TinyStories' models have it: a global then a local layer, unscaled scores, tied head. The window
    # (64) holds the prefix's 8 virtual tokens and a 48-token window, so the shared tests see no difference from
    # it; gpt-neo/windowed/ below is where the window bites.
    "gpt-neo": (GPTNeoForCausalLM,
                GPTNeoConfig(vocab_size=768, hidden_size=64, intermediate_size=176, num_layers=2, num_heads=4,
                             max_position_embeddings=256, window_size=64, attention_types=[[["global", "local"], 1]],
                             bos_token_id=1, eos_token_id=2),
                ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"]),
    # Cohere (Command R): one bias-free LayerNorm feeding attention and MLP side by side, q/k LayerNorms per head,
    # interleaved rotary, a logit scale, tied embeddings.
    "cohere": (CohereForCausalLM, CohereConfig(**SHAPE, use_qk_norm=True, logit_scale=0.25, rope_theta=10_000.0,
                                               tie_word_embeddings=True, pad_token_id=0), LLAMA_TARGETS),
}


def windows(ids):
    return torch.tensor([ids[w * WINDOW:(w + 1) * WINDOW] for w in range(WINDOWS)])


def loss_of(model, batch):
    with torch.no_grad():
        return model(batch, labels=batch).loss.item()


def greedy(model, prompt, steps=20):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def make(family, model_class, config, targets):
    out = os.path.join(HERE, "..", family)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(0)
    model = model_class(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if family == "cohere" and "norm" in name:  # Cohere's q/k norms are [heads, head_dim]: near one
                p.normal_(1, 0.1)
            elif p.dim() > 1 or name.endswith(".bias"):  # biases non-zero so they matter
                p.normal_(0, 0.08)
    model.save_pretrained(os.path.join(out, "base"), safe_serialization=True)
    shutil.copy(os.path.join(LLAMA, "base", "tokenizer.json"), os.path.join(out, "base"))
    shutil.copy(os.path.join(LLAMA, "eval.txt"), out)
    text = open(os.path.join(out, "eval.txt"), encoding="utf-8").read()
    ids = Tokenizer.from_file(os.path.join(out, "base", "tokenizer.json")).encode(text, add_special_tokens=False).ids
    batch = windows(ids)
    prompt = ids[:12]
    reference = json.load(open(os.path.join(LLAMA, "reference.json")))
    result = {"family": family, "eval_token_ids": ids, "window": WINDOW, "windows": WINDOWS,
              "loss_convention": reference["loss_convention"], "tokenizer_cases": reference["tokenizer_cases"]}
    tensors = {}
    result["base_loss"] = loss_of(model, batch)
    with torch.no_grad():
        tensors["base.logits.window0"] = model(batch[:1]).logits[0].contiguous()
    base_greedy = greedy(model, prompt)

    # LoRA on every projection, both factors non-zero so the adapter changes the output.
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    lora.eval()
    lora.save_pretrained(os.path.join(out, "lora"))
    os.remove(os.path.join(out, "lora", "README.md"))
    state = get_peft_model_state_dict(lora)
    with torch.no_grad():
        result["lora_loss"] = lora(batch, labels=batch).loss.item()
        tensors["lora.logits.window0"] = lora(batch[:1]).logits[0].contiguous()
    lora_greedy = greedy(lora, prompt)
    lora(batch, labels=batch).loss.backward()
    float32_gradients = {name.replace(".default", ""): p.grad.detach().double().clone()
                         for name, p in lora.named_parameters() if p.requires_grad}
    lora.zero_grad()

    # The LoRA gradients and five AdamW steps (as llama-gqa's) in float64, stored as float32: PyTorch's own float32
    # numbers are not the truth to hold a float32 engine to (on gpt-neo, with unscaled attention scores, its
    # fifth-step gradient norm is 30.8 where float64's is 1.7).
    lora = lora.double()
    trainable = [(name.replace(".default", ""), p) for name, p in lora.named_parameters() if p.requires_grad]
    lora(batch, labels=batch).loss.backward()
    # How far PyTorch's own float32 gradient is from float64's, relative to each tensor's largest entry: the
    # precision float32 allows on this model (tests hold Finch to a multiple of it where it exceeds 1e-4).
    result["float32_gradient_error"] = {}
    for key, p in trainable:
        assert key in state, key
        tensors["grad." + key] = p.grad.detach().float().contiguous()
        truth = p.grad.detach()
        result["float32_gradient_error"][key] = float((float32_gradients[key] - truth).abs().max() / truth.abs().max())
    adamw = {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1, "max_grad_norm": 1.0, "steps": 5,
             "batch": "all windows", "dtype": "float64"}
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=adamw["lr"], betas=tuple(adamw["betas"]),
                                  eps=adamw["eps"], weight_decay=adamw["weight_decay"])
    losses = []
    for _ in range(adamw["steps"]):
        optimizer.zero_grad()
        step = lora(batch, labels=batch)
        losses.append(step.loss.item())
        step.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], adamw["max_grad_norm"])
        optimizer.step()
    losses.append(loss_of(lora, batch))
    adamw["losses_before_each_step_then_final"] = losses
    result["adamw"] = adamw
    for key, p in trainable:
        tensors["adamw_trained." + key] = p.detach().float().contiguous()

    # The merge, from the adapter as saved (before the AdamW steps).
    base = model_class.from_pretrained(os.path.join(out, "base")).float().eval()
    from peft import PeftModel
    merged = PeftModel.from_pretrained(base, os.path.join(out, "lora")).merge_and_unload()
    merged.save_pretrained(os.path.join(out, "lora-merged"), safe_serialization=True)
    result["lora_merged_loss"] = loss_of(merged, batch)

    # Prefix tuning: 8 virtual tokens, no projection MLP.
    base = model_class.from_pretrained(os.path.join(out, "base")).float().eval()
    prefix = get_peft_model(base, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8))
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in prefix.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    prefix.eval()
    prefix.save_pretrained(os.path.join(out, "prefix"))
    os.remove(os.path.join(out, "prefix", "README.md"))
    result["prefix_loss"] = loss_of(prefix, batch)
    with torch.no_grad():
        tensors["prefix.logits.window0"] = prefix(batch[:1]).logits[0].contiguous()
    result["greedy"] = {"prompt_ids": prompt, "max_new_tokens": 20, "base": base_greedy, "lora": lora_greedy,
                        "prefix": greedy(prefix, prompt)}
    json.dump(result, open(os.path.join(out, "reference.json"), "w"), indent=1)
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    print(family, {k: result[k] for k in ["base_loss", "lora_loss", "lora_merged_loss", "prefix_loss"]})


for family, (model_class, config, targets) in FAMILIES.items():
    make(family, model_class, config, targets)


def logits_variant(family, name, model_class, config, seed):
    """FAMILY/NAME/: a model of another configuration and its logits on the first WINDOW eval tokens."""
    torch.manual_seed(seed)
    model = model_class(config).float().eval()
    with torch.no_grad():
        for parameter_name, p in model.named_parameters():
            if p.dim() > 1 or parameter_name.endswith(".bias"):
                p.normal_(0, 0.08)
    folder = os.path.join(HERE, "..", family, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)
    ids = json.load(open(os.path.join(HERE, "..", family, "reference.json")))["eval_token_ids"][:WINDOW]
    with torch.no_grad():
        save_file({"logits": model(torch.tensor([ids])).logits[0].contiguous()}, os.path.join(folder, "logits.safetensors"))
    print(f"{family}/{name} written")


# GPT-NeoX's sequential residual, tanh GELU and half of each head rotary.
logits_variant("gpt-neox", "sequential", GPTNeoXForCausalLM,
               GPTNeoXConfig(vocab_size=768, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=256, rotary_pct=0.5, rotary_emb_base=10_000,
                             use_parallel_residual=False, hidden_act="gelu_new", tie_word_embeddings=False,
                             bos_token_id=1, eos_token_id=2), seed=3)
# A GPT-Neo whose local layers (the second and fourth) see only the last 8 positions.
logits_variant("gpt-neo", "windowed", GPTNeoForCausalLM,
               GPTNeoConfig(vocab_size=768, hidden_size=64, intermediate_size=176, num_layers=4, num_heads=4,
                            max_position_embeddings=256, window_size=8, attention_types=[[["global", "local"], 2]],
                            bos_token_id=1, eos_token_id=2), seed=4)
# A Mistral whose sliding window (8) is shorter than the sequence.
logits_variant("mistral", "windowed", MistralForCausalLM,
               MistralConfig(**SHAPE, head_dim=16, sliding_window=8, rope_theta=10_000.0, tie_word_embeddings=False,
                             rms_norm_eps=1e-5), seed=5)
