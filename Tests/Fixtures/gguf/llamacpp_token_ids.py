"""Adds to tokenizer-expected.json the ids llama.cpp (llama-cpp-python, vocab only) gives for each text of each
tokenizer-*.gguf file, as "llama_cpp_ids" (special tokens in the text recognised, none added).

    ~/.cache/llamacpp/bin/python Tests/Fixtures/gguf/llamacpp_token_ids.py Tests/Fixtures/gguf
"""
import json
import os
import sys

from llama_cpp import Llama

folder = sys.argv[1] if len(sys.argv) > 1 else "."
path = os.path.join(folder, "tokenizer-expected.json")
expected = json.load(open(path, encoding="utf-8"))
for name, cases in expected.items():
    llm = Llama(model_path=os.path.join(folder, name), vocab_only=True, verbose=False)
    for case in cases:
        case["llama_cpp_ids"] = llm.tokenize(case["text"].encode("utf-8"), add_bos=False, special=True)
with open(path, "w", encoding="utf-8") as f:
    json.dump(expected, f, ensure_ascii=False, indent=1)
    f.write("\n")
