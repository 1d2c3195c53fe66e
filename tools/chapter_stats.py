"""Re-measure issue 15's table from the files: how well each chapter (nbs/0*.ipynb) reads as an explanation.

Per chapter:
- `export_cells`: code cells whose nbdev directives include `export` / `exporti` / `exports`.
- `median_lines`, `max_lines`: lines per export cell, counting the cell's source lines that are neither blank nor an
  nbdev directive (`#| ...`).
- `defs_per_cell`: top-level `def` / `class` statements in export cells, divided by the export cells that hold at least
  one (import-only or constant-only cells do not lower it).
- `public`, `demonstrated`, `demonstrated_share`: a *public definition* is an exported top-level `def` or `class` whose
  name does not start with `_`. It is *shown working in the next cells* when its name is read (an `ast.Name` in load
  context) by a code cell that is neither an export cell nor the `parameters` cell, and that lies in the run of cells
  right after the definition's cell: from its export cell down to the first export cell that follows a non-export
  code cell. Export cells that come one after another (markdown between them does not matter) are one group, and the
  demonstrations after the group count for every definition in it (nbdev's "define, then show it in the next cells";
  execnb and fastcore often show two or three small functions in one cell). A use further down the chapter, or only
  inside another definition, does not count.
- `saved_outputs`: code cells with at least one output, over all code cells.
- `long_lines`: lines over 120 characters in the chapter's code cells.
Project-wide: lines over 120 characters in the code cells of nbs/*.ipynb and in emosum/*.py, and whether LICENSE,
CHANGELOG.md and CONTRIBUTING.md exist.

`python tools/chapter_stats.py` prints a markdown table; `--json PATH` also writes the numbers; `--check` exits 1
unless every chapter has a median of <= 12 lines per export cell and >= 75% of its public definitions demonstrated
(issue 15's done-when). Positional arguments select chapters (paths or numbers such as 00 07).
"""
from __future__ import annotations
import argparse, ast, json, statistics, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from emosum.pipeline import cell_kind  # noqa: E402  (the one definition of export / run / demo cells)
MAX_LINE, MAX_MEDIAN, MIN_SHARE = 120, 12, 0.75


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def kind(cell) -> str:
    "`markdown`, `parameters`, `export` or `code` (run and demonstration cells): the pipeline's own classification."
    k = cell_kind({**cell, "source": _src(cell)})
    return "code" if k in ("run", "demo") else k


def _parse(src: str):
    code = "\n".join("" if l.lstrip().startswith(("%", "!")) else l for l in src.splitlines())
    try: return ast.parse(code)
    except SyntaxError: return None


def code_lines(src: str) -> int:
    "Lines that are neither blank nor an nbdev directive."
    return sum(1 for l in src.splitlines() if l.strip() and not l.lstrip().startswith("#|"))


def definitions(src: str) -> list[str]:
    "Names of the top-level `def` / `class` statements of a cell."
    tree = _parse(src)
    return [n.name for n in (tree.body if tree else []) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def names_read(src: str) -> set[str]:
    "Every name a cell reads (anywhere in it)."
    tree = _parse(src)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} if tree else set()


def demonstrated(cells) -> dict[str, bool]:
    "Public exported definitions -> whether a cell of the run right after their export group reads them (see above)."
    kinds = [kind(c) for c in cells]
    out = {}
    for i, c in enumerate(cells):
        if kinds[i] != "export": continue
        public = [n for n in definitions(_src(c)) if not n.startswith("_")]
        if not public: continue
        j = i + 1
        while j < len(cells) and kinds[j] in ("export", "markdown"): j += 1      # the rest of the export group
        seen = set()
        while j < len(cells) and kinds[j] != "export":                          # the cells that show it
            if kinds[j] == "code": seen |= names_read(_src(cells[j]))
            j += 1
        for n in public: out[n] = out.get(n, False) or n in seen
    return out


def long_lines(text: str, limit: int = MAX_LINE) -> int:
    return sum(len(l) > limit for l in text.splitlines())


def chapter_stats(path: str | Path) -> dict:
    "The numbers of one chapter."
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cells = nb["cells"]
    code = [c for c in cells if c.get("cell_type") == "code"]
    exports = [c for c in cells if kind(c) == "export"]
    sizes = [code_lines(_src(c)) for c in exports]
    ndefs = [len(definitions(_src(c))) for c in exports]
    demo = demonstrated(cells)
    return {"chapter": Path(path).stem, "export_cells": len(exports),
            "median_lines": statistics.median(sizes) if sizes else 0, "max_lines": max(sizes, default=0),
            "defs_per_cell": round(sum(ndefs) / max(1, sum(n > 0 for n in ndefs)), 2),
            "public": len(demo), "demonstrated": sum(demo.values()),
            "demonstrated_share": round(sum(demo.values()) / len(demo), 3) if demo else 1.0,
            "not_demonstrated": sorted(n for n, ok in demo.items() if not ok),
            "saved_outputs": sum(bool(c.get("outputs")) for c in code), "code_cells": len(code),
            "long_lines": sum(long_lines(_src(c)) for c in code), "lines": sum(len(_src(c).splitlines()) for c in code)}


def project_stats(root: str | Path = ROOT) -> dict:
    "Lines over 120 characters in nbs/ (code cells) and emosum/*.py; LICENSE / CHANGELOG / CONTRIBUTING present."
    root = Path(root)
    nb_long = nb_all = py_long = py_all = 0
    for p in sorted((root/"nbs").glob("*.ipynb")):
        for c in json.loads(p.read_text(encoding="utf-8"))["cells"]:
            if c.get("cell_type") == "code": nb_long += long_lines(_src(c)); nb_all += len(_src(c).splitlines())
    for p in sorted((root/"emosum").glob("*.py")):
        t = p.read_text(encoding="utf-8"); py_long += long_lines(t); py_all += len(t.splitlines())
    return {"long_lines_nbs": nb_long, "lines_nbs": nb_all, "long_lines_emosum": py_long, "lines_emosum": py_all,
            **{f: (root/f).is_file() for f in ("LICENSE", "CHANGELOG.md", "CONTRIBUTING.md")}}


def passes(s: dict) -> bool:
    "Issue 15's done-when for one chapter."
    return s["median_lines"] <= MAX_MEDIAN and s["demonstrated_share"] >= MIN_SHARE


def markdown_table(chapters: list[dict], project: dict | None = None) -> str:
    head = ["chapter", "export cells", "median / max lines", "defs per cell", "public shown", "saved outputs",
            "lines > 120", "done-when"]
    rows = [[s["chapter"], str(s["export_cells"]), f"{s['median_lines']:g} / {s['max_lines']}", f"{s['defs_per_cell']:g}",
             f"{s['demonstrated']}/{s['public']} ({s['demonstrated_share']:.0%})", f"{s['saved_outputs']}/{s['code_cells']}",
             f"{s['long_lines']} of {s['lines']}", "ok" if passes(s) else "no"] for s in chapters]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |", *("| " + " | ".join(r) + " |" for r in rows)]
    if project:
        files = ", ".join(f"{f} {'yes' if project[f] else 'no'}" for f in ("LICENSE", "CHANGELOG.md", "CONTRIBUTING.md"))
        out += ["", f"lines > 120: nbs/ {project['long_lines_nbs']} of {project['lines_nbs']}, emosum/ "
                    f"{project['long_lines_emosum']} of {project['lines_emosum']}; {files}"]
    return "\n".join(out)


def _chapters(args: list[str], root: Path) -> list[Path]:
    if not args: return sorted((root/"nbs").glob("0*.ipynb"))
    out = []
    for a in args:
        p = Path(a)
        if p.suffix == ".ipynb": out.append(p); continue
        hits = sorted((root/"nbs").glob(f"{a}_*.ipynb")) or sorted((root/"nbs").glob(f"{a}.ipynb"))
        if not hits: raise SystemExit(f"no chapter {a!r} in {root/'nbs'}")
        out += hits
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="*", help="chapters (paths, or numbers such as 00 07); default: nbs/0*.ipynb")
    ap.add_argument("--root", default=str(ROOT), help="the project folder (default: this repository)")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every chapter meets issue 15's done-when")
    ap.add_argument("--missing", action="store_true", help="also list the public definitions not demonstrated")
    a = ap.parse_args(argv)
    root = Path(a.root)
    chapters = [chapter_stats(p) for p in _chapters(a.chapters, root)]
    project = project_stats(root)
    print(markdown_table(chapters, project))
    if a.missing:
        for s in chapters:
            if s["not_demonstrated"]: print(f"{s['chapter']}: not demonstrated: {', '.join(s['not_demonstrated'])}")
    if a.json: Path(a.json).write_text(json.dumps({"chapters": chapters, "project": project}, indent=2) + "\n")
    if a.check:
        bad = [s["chapter"] for s in chapters if not passes(s)]
        if bad:
            print(f"check failed: {', '.join(bad)} (need median export-cell lines <= {MAX_MEDIAN} and >= {MIN_SHARE:.0%} "
                  "of public definitions demonstrated)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
