"""Runs the shipped fine-tuning recipes and prints the README's results table (Markdown).

    swift build -c release && python3 scripts/results.py [--only milton|commands] [--kind lora|lora-table|prefix|full]

Each recipe trains into runs/results/NAME under /usr/bin/time -v (wall time, peak resident memory), then
`finch eval` scores it: the validation split's loss and perplexity, and for the command task the exact
match of greedy completions on the test split (phrasings never seen in training). The base model's own
scores come first for reference. Standard library only.
"""
import json, re, subprocess, sys, time
from pathlib import Path

FINCH = ".build/release/finch"
BASE = "models/finch-shakespeare"
TASKS = {
    "milton": {"validation": "datasets/milton/validation.txt", "test": None, "kinds": ["lora", "prefix", "full"]},
    "commands": {"validation": "datasets/commands/validation.jsonl", "test": "datasets/commands/test.jsonl",
                 "kinds": ["lora", "lora-table", "prefix", "full"]},
}


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


def train(task, kind):
    name = f"{task}-{kind}"
    out_dir = f"runs/results/{name}"
    subprocess.run(["rm", "-rf", out_dir])
    start = time.time()
    out = run(["/usr/bin/time", "-v", FINCH, "train", f"recipes/{name}.yaml", f"output.dir={out_dir}", "logging.progress=plain"])
    wall = time.time() - start
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024
    trainable = int(re.search(r"trainable params: ([\d,]+)", out.stdout).group(1).replace(",", ""))
    total = int(re.search(r"all params: ([\d,]+)", out.stdout).group(1).replace(",", ""))
    model, adapter = (f"{out_dir}/merged", None) if kind == "full" else (BASE, f"{out_dir}/adapter")
    return {"name": name, "trainable": trainable, "total": total, "wall": wall, "rss": rss, "model": model, "adapter": adapter}


def main():
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    only_kind = sys.argv[sys.argv.index("--kind") + 1] if "--kind" in sys.argv else None
    rows = []
    for task, files in TASKS.items():
        if only and task != only:
            continue
        base_valid = evaluate(BASE, None, files["validation"])
        base_test = evaluate(BASE, None, files["test"]) if files["test"] else None
        rows.append((task, "base model (no fine-tuning)", None, base_valid, base_test))
        for kind in files["kinds"]:
            if only_kind and kind != only_kind:
                continue
            r = train(task, kind)
            valid = evaluate(r["model"], r["adapter"], files["validation"])
            test = evaluate(r["model"], r["adapter"], files["test"], f"runs/results/{r['name']}/test-predictions.jsonl") if files["test"] else None
            rows.append((task, kind, r, valid, test))
            print(f"done {r['name']}", file=sys.stderr)
    print("| task | method | trainable params | validation loss | perplexity | test exact match | wall time | peak memory |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for task, kind, r, valid, test in rows:
        trainable = "–" if r is None else f"{r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f} %)"
        exact = "–" if test is None else f"{100 * test['exact_match']:.1f} %"
        wall = "–" if r is None else f"{r['wall'] / 60:.1f} min"
        rss = "–" if r is None else f"{r['rss']:.0f} MB"
        print(f"| {task} | {kind} | {trainable} | {valid['loss']:.3f} | {valid['perplexity']:.1f} | {exact} | {wall} | {rss} |")


if __name__ == "__main__":
    main()
