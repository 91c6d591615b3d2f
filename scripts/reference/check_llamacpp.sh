#!/usr/bin/env bash
# Checks Finch's GGUF files against llama.cpp on one base model and one PEFT LoRA adapter trained over it:
# for the base itself, the merged model exported as f32 / q8_0 / same, and the adapter exported as a llama.cpp
# LoRA over the untouched base, the largest difference between Finch's next-token logits and llama.cpp's on the
# same file. Beside each quantised file, "own error" is what llama.cpp's quantised arithmetic alone changes: its
# logits on that file against its logits on the float32 copy of the same weights. Never run by CI.
#
#   scripts/reference/check_llamacpp.sh BASE.gguf PEFT_ADAPTER_DIR [TEXT]
# Needs: .build/release/finch, and llama-cpp-python in ~/.cache/llamacpp (../shared/peers/README.md).
set -euo pipefail
base=$1 adapter=$2
text=${3:-"The capital of France is Paris. In 1889 the Eiffel Tower was finished; it is 330 metres tall and sits by the Seine."}
finch=.build/release/finch
python=~/.cache/llamacpp/bin/python
compare=scripts/reference/compare_llamacpp.py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

max() { "$python" -c 'import json,sys; print("%.3g" % json.loads(sys.stdin.read().strip().splitlines()[-1])["max_abs_difference"])'; }
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3"; }

echo "| file | max |finch − llama.cpp| | llama.cpp own error |"
echo "| --- | --- | --- |"
"$finch" export --model "$base" --format gguf --type f32 --out "$work/base-f32.gguf" >/dev/null 2>&1
"$finch" logits --model "$base" --text "$text" > "$work/base.json"
"$finch" logits --model "$base" --adapter "$adapter" --text "$text" > "$work/adapted.json"
# llama.cpp's logits on the float32 copies, as a Finch-format logits file, to measure its own error against.
own() { # FILE FLOAT32_COPY [LORA]
    "$finch" logits --model "$2" --text "$text" > "$work/ref.json"
    local lora=(); [ -n "${3:-}" ] && lora=(--lora "$3")
    "$python" - "$1" "$2" "$work/ref.json" "${lora[@]}" <<'PY' 2>/dev/null
import json, sys
import numpy as np
from llama_cpp import Llama
args = sys.argv[1:]
lora = args[args.index("--lora") + 1] if "--lora" in args else None
ids = json.load(open(args[2]))["ids"]
def scores(path, **kw):
    llm = Llama(model_path=path, n_ctx=512, n_threads=2, logits_all=True, type_k=0, type_v=0, verbose=False, **kw)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)
quantised = scores(args[0], **({"lora_path": lora} if lora else {}))
print("%.3g" % np.abs(quantised - scores(args[1])).max())
PY
}
row "base ($(basename "$base"))" "$("$python" $compare "$base" "$work/base.json" 2>/dev/null | max)" "$(own "$base" "$work/base-f32.gguf")"
for type in f32 q8_0 same; do
    "$finch" export --model "$base" --adapter "$adapter" --format gguf --type "$type" --out "$work/merged-$type.gguf" >/dev/null 2>&1
    "$finch" logits --model "$work/merged-$type.gguf" --text "$text" > "$work/merged-$type.json"
done
row "merged, --type f32" "$("$python" $compare "$work/merged-f32.gguf" "$work/merged-f32.json" 2>/dev/null | max)" "–"
for type in q8_0 same; do
    "$finch" export --model "$work/merged-$type.gguf" --format gguf --type f32 --out "$work/merged-$type-f32.gguf" >/dev/null 2>&1
    row "merged, --type $type" "$("$python" $compare "$work/merged-$type.gguf" "$work/merged-$type.json" 2>/dev/null | max)" \
        "$(own "$work/merged-$type.gguf" "$work/merged-$type-f32.gguf")"
done
"$finch" export --model "$base" --adapter "$adapter" --format gguf-lora --out "$work/adapter.gguf" >/dev/null 2>&1
row "gguf-lora over the base" "$("$python" $compare "$base" "$work/adapted.json" --lora "$work/adapter.gguf" 2>/dev/null | max)" \
    "$(own "$base" "$work/merged-f32.gguf" "$work/adapter.gguf")"
