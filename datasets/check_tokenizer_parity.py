"""Checks that `finch tokenize` and the Hugging Face `tokenizers` library give the same ids (and that
`tokenizers` decodes them back to the text) on fixed samples and on slices of the given text files.

    pip install tokenizers
    python3 datasets/check_tokenizer_parity.py models/finch-shakespeare/tokenizer.json .build/release/finch \
        datasets/shakespeare/validation.txt datasets/milton/validation.txt
"""
import json, subprocess, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = [open(p).read() for p in sys.argv[3:]]
samples = ["To be, or not to be: that is the question.", "  leading spaces\tand tabs\n\n", "Unicode: café 東京 🙂", "Don't won't", "", "O Romeo, Romeo! wherefore art thou Romeo?"]
samples += [t[i:i+2000] for t in texts for i in range(0, len(t), 7919)]
bad = 0
for s in samples:
    ids = tok.encode(s).ids
    out = subprocess.run([sys.argv[2], "tokenize", "--model", sys.argv[1], "--text", s, "--json", "--no-special-tokens"], capture_output=True, text=True)
    mine = json.loads(out.stdout)["ids"]
    if mine != ids: bad += 1; print("MISMATCH", repr(s[:60]))
    if tok.decode(ids) != s: print("decode differs", repr(s[:40]))
print(f"{len(samples)} samples, {bad} mismatches")
