"""Save the outputs of a chapter's teaching cells (tables, plots, printed summaries), made on the CPU and deterministic.

Which cells: the code cells tagged `keep-output` (cell metadata `tags`, which `nbdev-clean` keeps; in JupyterLab the
property inspector edits them, from the shell `--tag`). They keep their outputs; every other cell's outputs are
cleared, so a chapter holds only outputs that teach.

How: each chapter is executed the way `make test` executes it (nbdev's in-process runner, `#| slow` / `#| gpu` cells
skipped), in a child process on the CPU (`CUDA_VISIBLE_DEVICES=""`), with the working directory `nbs/`, run folders in
a temporary `EMOSUM_RUNS`, `COLUMNS=100`, `PYTHONHASHSEED=0`, `MPLBACKEND=Agg` and progress bars off. What varies
between machines or runs is then made fixed in the kept outputs: stderr (warnings, progress bars) and errors are
dropped, as are output kinds other than text, HTML, markdown and images; in text, temporary paths read `<tmp>`, the
project folder `<project>`, the home folder `~`, timestamps `<time>`, durations `<t>s`, and memory addresses go.
The notebook is re-read just before it is written (others may be editing it), only the outputs change, and
`nbdev-clean` runs on it afterwards, so `tests/test_nbdev_sync.py` stays quiet.

    python tools/save_outputs.py 00 07                  # execute the chapters, save the tagged cells' outputs
    python tools/save_outputs.py --check 00 07          # exit 1 when a fresh run would save other outputs
    python tools/save_outputs.py --tag 07 'print(s)'    # tag the one code cell that contains the text
    make outputs CHAPTERS="00 07"                       # the first command (default: every numbered chapter)
"""
from __future__ import annotations
import argparse, json, os, re, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "keep-output"
SKIP_FLAGS = {"slow", "gpu"}
KEEP_MIME = ("text/plain", "text/html", "text/markdown", "image/png", "image/svg+xml")


def chapters(args: list[str], root: Path = ROOT) -> list[Path]:
    "Chapters given as paths or numbers (`00`, `07`); none: every numbered chapter."
    if not args: return sorted((root/"nbs").glob("[0-9][0-9]_*.ipynb"))
    out = []
    for a in args:
        p = Path(a)
        hits = [p] if p.suffix == ".ipynb" else sorted((root/"nbs").glob(f"{a}_*.ipynb")) or sorted((root/"nbs").glob(f"{a}.ipynb"))
        if not hits or not hits[0].is_file(): raise SystemExit(f"no chapter {a!r} in {root/'nbs'}")
        out += hits
    return out


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def tagged(cell) -> bool:
    return cell.get("cell_type") == "code" and TAG in cell.get("metadata", {}).get("tags", [])


def scrub_text(text: str, root: Path = ROOT) -> str:
    "Text with what differs between machines and runs replaced by fixed placeholders."
    text = text.replace(str(root), "<project>")                         # first: the project may lie in the temp folder
    tmp = re.escape(tempfile.gettempdir().rstrip("/"))
    text = re.sub(tmp + r"/[\w.-]+", "<tmp>", text)                    # a temporary folder (its name is random)
    text = text.replace(str(Path.home()), "~")
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)                   # memory addresses in reprs
    text = re.sub(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?", "<time>", text)
    return re.sub(r"\b\d+(\.\d+)? ?(ms|s|sec|seconds)\b", "<t>s", text)


def scrub_outputs(outputs: list, root: Path = ROOT) -> list:
    "The outputs worth keeping, deterministic: no stderr, no errors, known kinds only, text scrubbed."
    out = []
    for o in outputs:
        kind = o.get("output_type")
        if kind == "stream":
            if o.get("name") != "stdout": continue
            out.append({"name": "stdout", "output_type": "stream", "text": scrub_text(_src({"source": o.get("text", "")}), root)})
        elif kind in ("execute_result", "display_data"):
            data = {k: v for k, v in o.get("data", {}).items() if k in KEEP_MIME}
            data = {k: (scrub_text(_src({"source": v}), root) if k.startswith("text") or k.endswith("svg+xml") else v)
                    for k, v in data.items()}
            if not data: continue
            rec = {"data": data, "metadata": {}, "output_type": kind}
            if kind == "execute_result": rec["execution_count"] = None
            out.append(rec)
    return out


def _execute(nb_path: Path, result: Path):
    "Child process: execute the chapter like nbdev's test runner and write every code cell's outputs by cell id."
    from nbdev.process import NBProcessor
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    nb = NBProcessor(nb_path, rm_directives=False, process=True).nb
    def skip(cell):
        if cell.cell_type != "code": return True
        d = getattr(cell, "directives_", {}) or {}
        return bool(SKIP_FLAGS & set(d)) or d.get("eval:", [""])[0].lower() == "false"
    shell = CaptureShell(nb_path)
    with working_directory(nb_path.parent):
        shell.run_all(nb, exc_stop=True, preproc=skip)
    cells = {c.get("id"): {"source": c.source, "outputs": c.get("outputs", [])} for c in nb.cells if c.cell_type == "code"}
    result.write_text(json.dumps(cells, default=str))


def run_chapter(nb_path: Path, root: Path = ROOT) -> dict:
    "Execute `nb_path` in a child process on the CPU; `{cell id: {source, outputs}}` with scrubbed outputs."
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "EMOSUM_RUNS": f"{tmp}/runs", "COLUMNS": "100", "PYTHONHASHSEED": "0",
               "MPLBACKEND": "Agg", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}
        res = Path(tmp)/"outputs.json"
        r = subprocess.run([sys.executable, __file__, "--_execute", str(nb_path), str(res)], env=env, cwd=nb_path.parent,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{nb_path.name}: executing the chapter failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
        cells = json.loads(res.read_text())
    return {k: {"source": v["source"], "outputs": scrub_outputs(v["outputs"], root)} for k, v in cells.items()}


def merge(nb: dict, executed: dict) -> tuple[dict, list[str]]:
    "Put the executed outputs of tagged cells into `nb` and clear the others'; cells changed since are left alone."
    notes = []
    for c in nb["cells"]:
        if c.get("cell_type") != "code": continue
        if not tagged(c): c["outputs"] = []; continue
        got = executed.get(c.get("id"))
        if got is None or got["source"] != _src(c):
            notes.append(f"cell {c.get('id')} was not executed as it is now (skipped, or edited meanwhile): outputs kept")
            continue
        c["outputs"] = got["outputs"]
    return nb, notes


def _clean(nb_path: Path):
    subprocess.run([str(Path(sys.executable).parent/"nbdev-clean"), "--fname", str(nb_path)], check=True, cwd=ROOT)


def save(nb_path: Path, root: Path = ROOT) -> list[str]:
    executed = run_chapter(nb_path, root)
    nb, notes = merge(json.loads(nb_path.read_text(encoding="utf-8")), executed)   # read fresh: others may edit it
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    _clean(nb_path)
    return notes


def check(nb_path: Path, root: Path = ROOT) -> list[str]:
    "The tagged cells whose saved outputs differ from a fresh run's (empty: up to date)."
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp)/nb_path.name
        saved.write_text(nb_path.read_text(encoding="utf-8"), encoding="utf-8")
        fresh = Path(tmp)/("fresh_" + nb_path.name)
        nb, _ = merge(json.loads(saved.read_text(encoding="utf-8")), run_chapter(nb_path, root))
        fresh.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        for p in (saved, fresh): _clean(p)
        a, b = json.loads(saved.read_text())["cells"], json.loads(fresh.read_text())["cells"]
    return [f"{nb_path.name}: cell {x.get('id')} ({_src(x).splitlines()[0][:60] if _src(x) else ''}) differs"
            for x, y in zip(a, b) if x.get("outputs") != y.get("outputs")]


def tag(nb_path: Path, text: str):
    "Tag the one code cell of `nb_path` that contains `text`."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    hits = [c for c in nb["cells"] if c.get("cell_type") == "code" and text in _src(c)]
    if len(hits) != 1: raise SystemExit(f"{nb_path}: {len(hits)} code cells contain the text (need exactly 1)")
    tags = hits[0].setdefault("metadata", {}).setdefault("tags", [])
    if TAG not in tags: tags.append(TAG)
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_execute"]: _execute(Path(argv[1]), Path(argv[2])); return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("chapters", nargs="*", help="chapters (paths, or numbers such as 00 07); default: all numbered ones")
    ap.add_argument("--check", action="store_true", help="exit 1 when a fresh run would save other outputs")
    ap.add_argument("--tag", metavar="TEXT", help=f"tag the one code cell containing TEXT `{TAG}` (one chapter)")
    a = ap.parse_args(argv)
    paths = chapters(a.chapters)
    if a.tag:
        if len(paths) != 1: raise SystemExit("--tag takes exactly one chapter")
        tag(paths[0], a.tag); return 0
    bad = []
    for p in paths:
        if not any(tagged(c) for c in json.loads(p.read_text(encoding="utf-8"))["cells"]):
            print(f"{p.name}: no cell tagged {TAG}; nothing to save")
            continue
        if a.check:
            bad += check(p)
        else:
            for n in save(p): print(f"{p.name}: {n}")
            print(f"{p.name}: outputs saved")
    for b in bad: print(b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
