"""Makes the GGUF test files with gguf-py (the gguf package llama.cpp maintains), and the values its own
dequantisation gives for them, so Finch's reader and dequantisation are held to the reference.

    pip install gguf==0.19.0 numpy
    python3 Tests/Fixtures/gguf/make_gguf.py Tests/Fixtures/gguf
"""
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

out = sys.argv[1] if len(sys.argv) > 1 else "."


def finish(w):
    """Writes a GGUFWriter's header, metadata and tensors, and closes it."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

rng = np.random.default_rng(20261206)

# quants.gguf: the float32 "values", one tensor of each type Finch dequantises, and beside each ("NAME.expected", F32) what
# gguf.quants.dequantize gives for its bytes. Values span signs and magnitudes; some blocks are constant or
# zero, and one row holds a large outlier, so scales take odd values.
w = gguf.GGUFWriter(f"{out}/quants.gguf", "llama")
w.add_custom_alignment(64)
rows, columns = 6, 96
values = (rng.standard_normal((rows, columns)) * np.array([0.02, 1.0, 7.5, 0.001, 1.0, 3.0])[:, None]).astype(np.float32)
values[3, :32] = 0.0
values[4, 32:64] = 0.25
values[5, 7] = 400.0
w.add_tensor("values", values)  # what the block types below were quantised from (Finch's quantiser is held to them)
for qtype in [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]:
    name = qtype.name.lower()
    stored = gguf.quants.quantize(values, qtype)
    w.add_tensor(name, stored, raw_dtype=qtype)
    w.add_tensor(name + ".expected", gguf.quants.dequantize(stored, qtype).astype(np.float32).reshape(values.shape))
# K-quants: gguf-py cannot quantise them, so their blocks are random bytes (every scale and quant pattern, odd
# scales included) with finite float16 super-block scales; 3 rows of 2 blocks (512 values) each.
for qtype, scale_offsets in [(Q.Q2_K, [80, 82]), (Q.Q3_K, [108]), (Q.Q4_K, [0, 2]), (Q.Q5_K, [0, 2]), (Q.Q6_K, [208])]:
    name = qtype.name.lower()
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(6, type_size), dtype=np.uint8)
    for offset in scale_offsets:
        raw[:, offset:offset + 2] = (rng.standard_normal(6) * 0.05).astype(np.float16).view(np.uint8).reshape(6, 2)
    stored = raw.reshape(3, -1)
    w.add_tensor(name, stored, raw_dtype=qtype)
    w.add_tensor(name + ".expected", gguf.quants.dequantize(stored, qtype).astype(np.float32).reshape(3, 512))
finish(w)

# metadata.gguf: every metadata value type, arrays of strings and of arrays, and a 3-dimensional tensor.
w = gguf.GGUFWriter(f"{out}/metadata.gguf", "llama")
w.add_uint8("test.uint8", 200)
w.add_int8("test.int8", -100)
w.add_uint16("test.uint16", 60000)
w.add_int16("test.int16", -30000)
w.add_uint32("test.uint32", 4000000000)
w.add_int32("test.int32", -2000000000)
w.add_uint64("test.uint64", 18000000000000000000)
w.add_int64("test.int64", -9000000000000000000)
w.add_float32("test.float32", 0.1)
w.add_float64("test.float64", 0.1)
w.add_bool("test.bool", True)
w.add_string("test.string", "héllo, 世界 🙂")
w.add_array("test.strings", ["a", "", "ccc"])
w.add_array("test.nested", [[1, 2], [3]])
w.add_tensor("cube", np.arange(24, dtype=np.float32).reshape(2, 3, 4))
finish(w)

# llama-gqa.gguf: ../llama-gqa/base (transformers' float32 LLaMA with grouped-query attention) written as
# llama.cpp's convert_hf_to_gguf.py writes a LLaMA: its tensor names, q and k rows permuted per head to the
# interleaved rotary layout, F32. Finch must load it to the same model as the Hugging Face folder. Its tokenizer is
# a SentencePiece one with the folder's pieces, each scored by minus its id (as tokenizer-llama.gguf).
import json
import os
import struct

def folder(family):
    """A fixture folder's config and its float32 safetensors weights by name."""
    base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", family, "base")
    raw = open(os.path.join(base, "model.safetensors"), "rb").read()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_length])
    weights = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        data = raw[8 + header_length + start:8 + header_length + end]
        weights[name] = np.frombuffer(data, dtype=np.float32).reshape(info["shape"])
    return base, json.load(open(os.path.join(base, "config.json"))), weights


def permute(w, heads):
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def sentencepiece_tokenizer(w, base, config):
    """The folder's pieces as a SentencePiece vocabulary, each scored by minus its id."""
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    tokenizer = json.load(open(os.path.join(base, "tokenizer.json")))
    pieces = [t for t, _ in sorted(tokenizer["model"]["vocab"].items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores([-float(i) for i in range(len(pieces))])
    w.add_token_types([2 if p == "<unk>" else 3 if p in ("<s>", "</s>") else 6 if p.startswith("<0x") else 1 for p in pieces])
    w.add_unk_token_id(0)


def llama_like(family, architecture, permuted):
    base, config, weights = folder(family)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    w = gguf.GGUFWriter(f"{out}/{family}.gguf", architecture)
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    if architecture == "command-r":
        # Command R: LayerNorm epsilon, logit_scale, no rope scaling; q and k rows stay as they are (its rotary
        # pairs are already interleaved, as llama.cpp runs them), the per-head q and k norms kept [heads, head_dim].
        w.add_layer_norm_eps(config["layer_norm_eps"])
        w.add_logit_scale(config["logit_scale"])
        w.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    else:
        w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    sentencepiece_tokenizer(w, base, config)
    w.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    llama_names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                   "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                   "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                   "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
    for i in range(config["num_hidden_layers"]):
        for hf, gg in llama_names.items():
            for part in ["weight", "bias"]:
                key = f"model.layers.{i}.{hf}.{part}"
                if key not in weights:
                    continue
                t = weights[key]
                if permuted and hf == "self_attn.q_proj":
                    t = permute(t, heads)
                if permuted and hf == "self_attn.k_proj":
                    t = permute(t, kv_heads)
                w.add_tensor(f"blk.{i}.{gg}.{part}", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", weights["model.norm.weight"])
    if "lm_head.weight" in weights:
        w.add_tensor("output.weight", weights["lm_head.weight"])
    finish(w)


llama_like("llama-gqa", "llama", permuted=True)


# gpt2.gguf: ../gpt2/base (transformers' float32 GPT-2) written as llama.cpp's converter writes a GPT-2: its tensor
# names, the Conv1D weights transposed to [out, in], the head written as a copy of the token table, F32, and the
# folder's byte-level BPE tokenizer with the "gpt-2" pre-tokenizer.
base, config, weights = folder("gpt2")
weights = {name.removeprefix("transformer."): w for name, w in weights.items()}
w = gguf.GGUFWriter(f"{out}/gpt2.gguf", "gpt2")
w.add_block_count(config["n_layer"])
w.add_context_length(config["n_positions"])
w.add_embedding_length(config["n_embd"])
w.add_feed_forward_length(config.get("n_inner") or 4 * config["n_embd"])
w.add_head_count(config["n_head"])
w.add_layer_norm_eps(config["layer_norm_epsilon"])
tokenizer = json.load(open(os.path.join(base, "tokenizer.json")))
vocab = tokenizer["model"]["vocab"]
tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("gpt-2")
w.add_token_list(tokens)
w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])
w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]])
w.add_bos_token_id(config["bos_token_id"])
w.add_eos_token_id(config["eos_token_id"])
names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
         "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
w.add_tensor("token_embd.weight", weights["wte.weight"])
w.add_tensor("position_embd.weight", weights["wpe.weight"])
for i in range(config["n_layer"]):
    for hf, gg in names.items():
        for part in ["weight", "bias"]:
            t = weights[f"h.{i}.{hf}.{part}"]
            if part == "weight" and hf not in ("ln_1", "ln_2"):
                t = t.T  # Conv1D stores [in, out]
            w.add_tensor(f"blk.{i}.{gg}.{part}", np.ascontiguousarray(t))
w.add_tensor("output_norm.weight", weights["ln_f.weight"])
w.add_tensor("output_norm.bias", weights["ln_f.bias"])
w.add_tensor("output.weight", weights["wte.weight"])
finish(w)

# qwen2.gguf and mistral.gguf: ../qwen2/base and ../mistral/base as llama.cpp's converter writes them. Qwen2 is its
# own architecture ("qwen2": the llama tensor names plus q, k and v biases, rows not permuted, since llama.cpp runs
# Qwen2 with the rotary halves Hugging Face uses; no output.weight when the head is tied). Mistral is written as a
# LLaMA ("llama": q and k rows permuted; llama.cpp keeps no sliding window). Tokenizers as llama-gqa.gguf's.
llama_like("qwen2", "qwen2", permuted=False)
llama_like("mistral", "llama", permuted=True)

# cohere.gguf: ../cohere/base as the converter writes a Command R ("command-r"): the llama tensor names plus
# attn_q_norm and attn_k_norm, nothing permuted, no output.weight (the head is the token table).
llama_like("cohere", "command-r", permuted=False)


# gpt-neox.gguf: ../gpt-neox/base as the converter writes a GPT-NeoX ("gptneox"): query_key_value's rows, which
# Hugging Face keeps head by head (q, k, v of head 0, then of head 1, ...), regrouped as all q rows, all k rows,
# all v rows (the bias likewise); the rotary dimensions as rotary_pct times the head size; the parallel residual
# flag; LayerNorm epsilon; the untied head as output.weight.
base, config, weights = folder("gpt-neox")
heads, hidden = config["num_attention_heads"], config["hidden_size"]
rotary = config.get("rotary_pct", config.get("rope_parameters", {}).get("partial_rotary_factor"))
w = gguf.GGUFWriter(f"{out}/gpt-neox.gguf", "gptneox")
w.add_context_length(config["max_position_embeddings"])
w.add_embedding_length(hidden)
w.add_block_count(config["num_hidden_layers"])
w.add_feed_forward_length(config["intermediate_size"])
w.add_rope_dimension_count(int(rotary * (hidden // heads)))
w.add_head_count(heads)
w.add_parallel_residual(config.get("use_parallel_residual", True))
w.add_layer_norm_eps(config["layer_norm_eps"])
sentencepiece_tokenizer(w, base, config)
w.add_tensor("token_embd.weight", weights["gpt_neox.embed_in.weight"])
neox_names = {"input_layernorm": "attn_norm", "attention.query_key_value": "attn_qkv", "attention.dense": "attn_output",
              "post_attention_layernorm": "ffn_norm", "mlp.dense_h_to_4h": "ffn_up", "mlp.dense_4h_to_h": "ffn_down"}
for i in range(config["num_hidden_layers"]):
    for hf, gg in neox_names.items():
        for part in ["weight", "bias"]:
            t = weights[f"gpt_neox.layers.{i}.{hf}.{part}"]
            if hf == "attention.query_key_value":
                t = t.reshape(heads, 3, hidden // heads, *t.shape[1:]).swapaxes(0, 1).reshape(t.shape)
            w.add_tensor(f"blk.{i}.{gg}.{part}", np.ascontiguousarray(t))
w.add_tensor("output_norm.weight", weights["gpt_neox.final_layer_norm.weight"])
w.add_tensor("output_norm.bias", weights["gpt_neox.final_layer_norm.bias"])
w.add_tensor("output.weight", weights["embed_out.weight"])
finish(w)
