"""Runs the results recipes and prints the README's results table (Markdown).

    swift build -c release && python3 scripts/results.py [--task commands|milton] [--only NAME,NAME...] [--shakespeare]
        [--skip-base]

Each recipe trains into runs/results/NAME under /usr/bin/time -v (wall time, peak resident memory), then
`finch eval` scores it: the validation split's loss and perplexity, and for the command task the exact
match of greedy completions on the whole test split (phrasings never seen in training), each completion
written to runs/results/NAME/test-predictions.jsonl. The base model's own scores come first. The rows are
the SmolLM2-135M-Instruct recipes (scripts/fetch-smollm2 first); --shakespeare runs the same methods on
the shipped 4.2 M-parameter model (recipes/shakespeare/); --skip-base leaves the base model's row out. A private
run's method gets the ε its run directory's privacy.json reports. Standard library only.
"""
import json, re, subprocess, sys, time
from pathlib import Path

FINCH = ".build/release/finch"
DATA = {
    "commands": {"validation": "datasets/commands/validation.jsonl", "test": "datasets/commands/test.jsonl"},
    "milton": {"validation": "datasets/milton/validation.txt", "test": None},
}
# (task, method as the table names it, recipe)
ROWS = [
    ("commands", "LoRA r4, every layer", "recipes/commands-lora.yaml"),
    ("commands", "DoRA r4, every layer", "recipes/commands-dora.yaml"),
    ("commands", "LoRA r4, every layer, 250 steps", "recipes/commands-lora-long.yaml"),
    ("commands", "LoRA r12, top 10 layers", "recipes/commands-lora-top10.yaml"),
    ("commands", "LoRA r16, every layer (the quickstart)", "recipes/quickstart.yaml"),
    ("commands", "prefix tuning", "recipes/commands-prefix.yaml"),
    ("commands", "full fine-tuning", "recipes/commands-full.yaml"),
    ("commands", "LoRA r4, one request a sequence, 60 steps of 64", "recipes/commands-lora-unpacked.yaml"),
    ("commands", "the same, DP-SGD ε 8", "recipes/commands-private-eps8.yaml"),
    ("commands", "the same, DP-SGD ε 3", "recipes/commands-private-eps3.yaml"),
    ("commands", "the same, DP-SGD ε 1", "recipes/commands-private-eps1.yaml"),
    ("commands", "DP-SGD ε 8, 30 steps of 256", "recipes/commands-private-eps8-batch256.yaml"),
    ("milton", "LoRA r4, every layer", "recipes/milton-lora.yaml"),
    ("milton", "LoRA r16, every layer", "recipes/milton-lora-r16.yaml"),
    ("milton", "prefix tuning", "recipes/milton-prefix.yaml"),
    ("milton", "full fine-tuning", "recipes/milton-full.yaml"),
]
SHAKESPEARE_ROWS = [
    ("commands", "LoRA r4, q/v/down", "recipes/shakespeare/commands-lora.yaml"),
    ("commands", "LoRA r4 + token table", "recipes/shakespeare/commands-lora-table.yaml"),
    ("commands", "prefix tuning", "recipes/shakespeare/commands-prefix.yaml"),
    ("commands", "full fine-tuning", "recipes/shakespeare/commands-full.yaml"),
    ("milton", "LoRA r8, every projection", "recipes/shakespeare/milton-lora.yaml"),
    ("milton", "prefix tuning", "recipes/shakespeare/milton-prefix.yaml"),
    ("milton", "full fine-tuning", "recipes/shakespeare/milton-full.yaml"),
]


def run(args):
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr}")
    return out


def evaluate(model, adapter, data, predictions=None):
    args = [FINCH, "eval", "--model", model, "--data", data, "--json"]
    if predictions:
        args += ["--predictions", predictions]
    if data.endswith(".txt"):
        args += ["--seq-len", "256"]
    if adapter:
        args += ["--adapter", adapter]
    return json.loads(run(args).stdout)


def base_model(recipe):
    """The recipe's `model:` line."""
    match = re.search(r"^model:\s*(\S+)", Path(recipe).read_text(), re.MULTILINE)
    if not match:
        sys.exit(f"{recipe}: no model: line")
    return match.group(1)


def train(recipe):
    name = Path(recipe).stem
    out_dir = f"runs/results/{name}"
    subprocess.run(["rm", "-rf", out_dir])
    start = time.time()
    out = run(["/usr/bin/time", "-v", FINCH, "train", recipe, f"output.dir={out_dir}", "logging.progress=plain"])
    wall = time.time() - start
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024
    trainable = int(re.search(r"trainable params: ([\d,]+)", out.stdout).group(1).replace(",", ""))
    total = int(re.search(r"all params: ([\d,]+)", out.stdout).group(1).replace(",", ""))
    base = base_model(recipe)
    if "type: none" in Path(recipe).read_text():
        model, adapter = (f"{out_dir}/merged.gguf" if base.endswith(".gguf") else f"{out_dir}/merged"), None
    else:
        model, adapter = base, f"{out_dir}/adapter"
    return {"name": name, "trainable": trainable, "total": total, "wall": wall, "rss": rss, "model": model,
            "adapter": adapter}


def main():
    def option(flag):
        return sys.argv[sys.argv.index(flag) + 1] if flag in sys.argv else None
    only_task, only_name = option("--task"), option("--only")
    rows = []
    chosen = [r for r in (SHAKESPEARE_ROWS if "--shakespeare" in sys.argv else ROWS)
              if (only_task is None or r[0] == only_task) and (only_name is None or Path(r[2]).stem in only_name.split(","))]
    based = set()
    for task, method, recipe in chosen:
        files = DATA[task]
        base = base_model(recipe)
        if (task, base) not in based and "--skip-base" not in sys.argv:
            based.add((task, base))
            valid = evaluate(base, None, files["validation"])
            test = evaluate(base, None, files["test"]) if files["test"] else None
            rows.append((task, "base model (no fine-tuning)", None, valid, test))
        r = train(recipe)
        valid = evaluate(r["model"], r["adapter"], files["validation"])
        test = evaluate(r["model"], r["adapter"], files["test"],
                        f"runs/results/{r['name']}/test-predictions.jsonl") if files["test"] else None
        privacy = Path(f"runs/results/{r['name']}/privacy.json")
        if privacy.exists():
            report = json.loads(privacy.read_text())
            method += f" (ε {report['epsilon']:.2f}, σ {report['noise_multiplier']:.3f})"
        rows.append((task, method, r, valid, test))
        print(f"done {recipe}", file=sys.stderr)
    print("| task | method | trainable params | validation loss | perplexity | test exact match | wall time | peak memory |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for task, method, r, valid, test in rows:
        trainable = "–" if r is None else f"{r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f} %)"
        exact = "–" if test is None else f"{100 * test['exact_match']:.1f} %"
        wall = "–" if r is None else f"{r['wall'] / 60:.1f} min"
        rss = "–" if r is None else f"{r['rss']:.0f} MB"
        print(f"| {task} | {method} | {trainable} | {valid['loss']:.3f} | {valid['perplexity']:.1f} | {exact} | {wall} | {rss} |")


if __name__ == "__main__":
    main()
