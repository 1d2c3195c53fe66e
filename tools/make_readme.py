"""Render nbs/index.ipynb to README.md (markdown cells as they are, code cells as fenced Python,
text outputs as fenced blocks). nbdev's own `nbdev-readme` does this through Quarto, whose PyPI
package downloads a binary at install time and so cannot be installed on machines without internet;
this keeps README.md generated from the notebook all the same, and tests/test_readme.py checks it.

    python tools/make_readme.py          # write README.md
    python tools/make_readme.py --check  # exit 1 if README.md is out of date
"""
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"


def _output_text(out) -> str:
    if out.get("output_type") == "stream": return out.get("text", "")
    data = out.get("data", {})
    if "text/markdown" in data: return "\0md" + data["text/markdown"]
    return data.get("text/plain", "")


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for cell in nb.cells:
        src = cell.source.strip()
        if cell.cell_type == "markdown":
            parts.append(src)
        elif cell.cell_type == "code":
            lines = [l for l in src.splitlines() if not l.startswith("#|")]
            hidden = any(l.strip() in ("#| hide", "#| echo: false") for l in src.splitlines())
            if lines and not hidden: parts.append("```python\n" + "\n".join(lines).strip() + "\n```")
            for out in cell.get("outputs", []):
                txt = _output_text(out).rstrip()
                if not txt: continue
                parts.append(txt[3:] if txt.startswith("\0md") else "```\n" + txt + "\n```")
    return HEADER + "\n\n".join(p for p in parts if p) + "\n"


if __name__ == "__main__":
    text = render()
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        ok = readme.exists() and readme.read_text() == text
        print("README.md is up to date" if ok else "README.md is out of date: run python tools/make_readme.py")
        sys.exit(0 if ok else 1)
    readme.write_text(text)
    print(f"wrote {readme}")
