"""Small helper for editing notebook cells from the shell: `python tools/nbedit.py NB OLD NEW` replaces one exact
occurrence of OLD (in exactly one cell) by NEW; used by developers, never by the package."""
import json, sys
from pathlib import Path

def replace(nb_path, old, new):
    p = Path(nb_path); nb = json.loads(p.read_text())
    hits = [c for c in nb["cells"] if old in "".join(c["source"])]
    if len(hits) != 1: raise SystemExit(f"{nb_path}: {len(hits)} cells contain the text (need exactly 1)")
    src = "".join(hits[0]["source"])
    if src.count(old) != 1: raise SystemExit(f"{nb_path}: the text occurs {src.count(old)} times in its cell")
    hits[0]["source"] = src.replace(old, new).splitlines(keepends=True)
    p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")

if __name__ == "__main__":
    replace(*sys.argv[1:4])
