"""Makes GGUF files that carry only a tokenizer, and the ids the reference tokenizers give for test texts, so
Finch's GGUF tokenizers are held to them.

    ~/.cache/peer/bin/pip install gguf==0.19.0 tokenizers transformers sentencepiece protobuf
    ~/.cache/peer/bin/python Tests/Fixtures/gguf/make_tokenizer_gguf.py Tests/Fixtures/gguf

tokenizer-<pre>.gguf: tokenizer.ggml.model "gpt2" with the byte-level BPE of ../gpt2/base (its vocabulary and
merges, <|endoftext|> a control token) and tokenizer.ggml.pre = <pre>. The reference is the `tokenizers` library
running that BPE behind the pre-tokenizer the original model's tokenizer.json has for that name.

tokenizer-llama.gguf: tokenizer.ggml.model "llama" (SentencePiece) with the pieces of ../llama-gqa/base, each
scored by minus its id as SentencePiece scores pieces, <unk>/<s>/</s> and the <0xNN> byte pieces typed as
llama.cpp's converter types them. The reference is transformers' own GGUF tokenizer for the file.

tokenizer-expected.json: for each file, the texts and the ids (no special tokens added) and, for llama, the
ids with them. Then llamacpp_token_ids.py (in llama.cpp's environment, ../../../../shared/peers/README.md) adds the
ids llama.cpp gives for each text.
"""
import json
import os
import sys

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

out = sys.argv[1] if len(sys.argv) > 1 else "."
here = os.path.dirname(os.path.abspath(__file__))
texts = [
    open(os.path.join(here, "mixed.txt"), encoding="utf-8").read(),
    "Hello world",
    "  leading spaces and trailing  ",
    "x=1234567;y = 89\n\n\nz",
    "<|endoftext|>after a special token<|endoftext|>",
    "</s> after the end token",
    "don't DON'T I'm you'LL",
    "",
]

gpt2 = json.load(open(os.path.join(here, "..", "gpt2", "base", "tokenizer.json")))
vocab = gpt2["model"]["vocab"]
tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
merges = [m if isinstance(m, str) else " ".join(m) for m in gpt2["model"]["merges"]]
byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
contractions = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"


def modern(numbers):
    return contractions + r"|[^\r\n\p{L}\p{N}]?\p{L}+|" + numbers + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def split_then_bytes(regex):
    return [pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]


pre_tokenizer_of = {
    "gpt-2": [byte_level],
    "smollm": [pre_tokenizers.Digits(individual_digits=True), byte_level],
    "llama-bpe": split_then_bytes(modern(r"\p{N}{1,3}")),
    "qwen2": split_then_bytes(modern(r"\p{N}")),
}
expected = {}
for pre, parts in pre_tokenizer_of.items():
    reference = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges]))
    reference.pre_tokenizer = pre_tokenizers.Sequence(parts)
    reference.decoder = decoders.ByteLevel()
    reference.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    name = f"tokenizer-{pre}.gguf"
    w = gguf.GGUFWriter(os.path.join(out, name), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expected[name] = [{"text": t, "ids": reference.encode(t, add_special_tokens=False).ids} for t in texts]

llama = json.load(open(os.path.join(here, "..", "llama-gqa", "base", "tokenizer.json")))
pieces = [t for t, _ in sorted(llama["model"]["vocab"].items(), key=lambda kv: kv[1])]
types = [2 if p == "<unk>" else 3 if p in ("<s>", "</s>") else 6 if p.startswith("<0x") else 1 for p in pieces]
name = "tokenizer-llama.gguf"
w = gguf.GGUFWriter(os.path.join(out, name), "llama")
w.add_tokenizer_model("llama")
w.add_token_list(pieces)
w.add_token_scores([-float(i) for i in range(len(pieces))])
w.add_token_types(types)
w.add_unk_token_id(0)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_add_bos_token(True)
w.add_add_eos_token(False)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

from transformers import AutoTokenizer  # noqa: E402 (slow to import; only this file needs it)

reference = AutoTokenizer.from_pretrained(out, gguf_file=name)
expected[name] = [{"text": t, "ids": reference(t, add_special_tokens=False)["input_ids"],
                   "ids_with_special_tokens": reference(t)["input_ids"]} for t in texts]
with open(os.path.join(out, "tokenizer-expected.json"), "w", encoding="utf-8") as f:
    json.dump(expected, f, ensure_ascii=False, indent=1)
    f.write("\n")
