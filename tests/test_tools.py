"""The developer tools under tools/: issue 15's chapter measure (and the saved-outputs command)."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import chapter_stats as cs  # noqa: E402


def _cell(src, kind="code", outputs=None, tags=None):
    c = {"cell_type": kind, "metadata": {"tags": tags} if tags else {}, "source": src}
    if kind == "code": c.update(outputs=outputs or [], execution_count=None)
    return c


def _chapter(tmp_path, cells, name="00_demo.ipynb"):
    (tmp_path / "nbs").mkdir(exist_ok=True)
    p = tmp_path / "nbs" / name
    p.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return p


CELLS = [
    _cell("# A chapter", "markdown"),
    _cell("x = 1", tags=["parameters"]),
    _cell("#| export\nimport os"),                                     # no definition: not in defs per cell
    _cell("#| export\nLIMIT = 3\n\ndef small(a):\n    return a + LIMIT"),  # 3 lines (directive and blank not counted)
    _cell("Why `helper` exists.", "markdown"),                           # markdown keeps the export group together
    _cell("#| export\ndef helper(b):\n    return b\n\ndef _private(c): return c"),   # 3 lines, 2 definitions
    _cell("assert small(1) == 4", outputs=[{"output_type": "stream", "name": "stdout", "text": "ok"}]),  # shows small only
    _cell("#| export\nclass Thing:\n    y = '" + "a long line " * 12 + "'\n    z = 1\n    w = 2\n    v = 3"),  # 5 lines
    _cell("print('nothing shown')"),
    _cell("#| export\ndef later(): return 1"),                         # shown only after the next export cell: not shown
    _cell("#| export\ndef last(): return 2"),
    _cell("assert last() == 2 and x == 1\nlater"),                     # the group [later, last]: both shown
    _cell("Thing()"),                                                  # too late for Thing
]


def test_chapter_stats_on_a_hand_made_chapter(tmp_path):
    s = cs.chapter_stats(_chapter(tmp_path, CELLS))
    assert s["export_cells"] == 6 and s["median_lines"] == 2.0 and s["max_lines"] == 5   # sizes 1, 3, 3, 5, 1, 1
    assert s["defs_per_cell"] == round(6 / 5, 2)                       # 6 definitions in the 5 cells that hold one
    assert (s["public"], s["demonstrated"]) == (5, 3) and s["not_demonstrated"] == ["Thing", "helper"]
    assert s["demonstrated_share"] == 0.6
    assert (s["saved_outputs"], s["code_cells"]) == (1, 11) and s["long_lines"] == 1
    assert not cs.passes(s) and cs.passes({**s, "demonstrated_share": 0.75})
    assert cs.passes({**s, "median_lines": 12, "demonstrated_share": 0.8}) and not cs.passes({**s, "median_lines": 12.5, "demonstrated_share": 0.8})


def test_chapter_stats_cli_table_json_and_check(tmp_path):
    _chapter(tmp_path, CELLS)
    good = [_cell("#| export\ndef f(): return 1"), _cell("assert f() == 1")]
    _chapter(tmp_path, good, name="01_good.ipynb")
    (tmp_path / "emosum").mkdir(); (tmp_path / "emosum" / "m.py").write_text("a = 1\n" + "#" * 121 + "\n")
    (tmp_path / "LICENSE").write_text("x")
    tool = [sys.executable, str(ROOT / "tools" / "chapter_stats.py"), "--root", str(tmp_path)]
    r = subprocess.run(tool + ["--json", str(tmp_path / "s.json"), "--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "check failed: 00_demo" in r.stderr and "01_good" not in r.stderr
    assert "| 00_demo | 6 | 2 / 5 | 1.2 | 3/5 (60%) | 1/11 | 1 of 28 | no |" in r.stdout
    assert "| 01_good | 1 | 1 / 1 | 1 | 1/1 (100%) | 0/2 | 0 of 3 | ok |" in r.stdout
    assert "emosum/ 1 of 2; LICENSE yes, CHANGELOG.md no, CONTRIBUTING.md no" in r.stdout
    j = json.loads((tmp_path / "s.json").read_text())
    assert [c["chapter"] for c in j["chapters"]] == ["00_demo", "01_good"] and j["project"]["long_lines_emosum"] == 1
    r = subprocess.run(tool + ["01", "--check"], capture_output=True, text=True)
    assert r.returncode == 0 and "00_demo" not in r.stdout


# --- tools/save_outputs.py: the teaching cells' outputs, deterministic
import save_outputs as so  # noqa: E402


def test_scrub_makes_outputs_deterministic():
    tmp = so.tempfile.gettempdir()
    text = (f"run: {tmp}/tmpab12_x/r1 (in {so.ROOT}/nbs)\nstarted 2026-11-29T15:44:31.123+00:00, done in 12.5s, 3 s, 40 ms\n"
            f"<Thing at 0x7f3a2b1c> home {so.Path.home()}/x")
    assert so.scrub_text(text) == ("run: <tmp>/r1 (in <project>/nbs)\nstarted <time>, done in <t>s, <t>s, <t>s\n"
                                   "<Thing> home ~/x")
    outs = [{"output_type": "stream", "name": "stderr", "text": "UserWarning: x\n"},          # warnings, progress bars
            {"output_type": "stream", "name": "stdout", "text": ["took 1.5s\n", "ok\n"]},
            {"output_type": "execute_result", "execution_count": 7, "metadata": {"x": 1},
             "data": {"text/plain": "1", "application/vnd.jupyter.widget-view+json": {}}},
            {"output_type": "display_data", "data": {"application/json": {}}, "metadata": {}},  # nothing worth keeping
            {"output_type": "error", "ename": "E", "evalue": "", "traceback": []}]
    assert so.scrub_outputs(outs) == [{"name": "stdout", "output_type": "stream", "text": "took <t>s\nok\n"},
                                      {"data": {"text/plain": "1"}, "metadata": {}, "output_type": "execute_result",
                                       "execution_count": None}]


def test_merge_keeps_tagged_cells_only():
    keep = {"cell_type": "code", "id": "a", "metadata": {"tags": [so.TAG]}, "source": "print(1)", "outputs": []}
    other = {"cell_type": "code", "id": "b", "metadata": {}, "source": "x = 1", "outputs": [{"output_type": "stream"}]}
    edited = {"cell_type": "code", "id": "c", "metadata": {"tags": [so.TAG]}, "source": "print(3)", "outputs": ["old"]}
    out1 = [{"name": "stdout", "output_type": "stream", "text": "1\n"}]
    executed = {"a": {"source": "print(1)", "outputs": out1}, "b": {"source": "x = 1", "outputs": []},
                "c": {"source": "print(2)", "outputs": []}}                      # c was edited since it ran
    nb, notes = so.merge({"cells": [keep, other, edited]}, executed)
    assert [c["outputs"] for c in nb["cells"]] == [out1, [], ["old"]] and len(notes) == 1 and "cell c" in notes[0]


def test_save_outputs_on_a_hand_made_chapter(tmp_path):
    nb = {"cells": [_cell("import tempfile, time\nprint('made in', tempfile.mkdtemp())", tags=[so.TAG]),
                    _cell("print('not kept')"),
                    _cell("#| slow\nprint('skipped')", tags=[so.TAG], outputs=[{"output_type": "stream", "name": "stdout",
                                                                                "text": "kept from before\n"}]),
                    _cell("{'rows': 2}", tags=[so.TAG])],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    for i, c in enumerate(nb["cells"]): c["id"] = f"c{i}"
    p = tmp_path / "00_demo.ipynb"; p.write_text(json.dumps(nb))
    assert so.save(p) == []
    cells = json.loads(p.read_text())["cells"]
    assert cells[0]["outputs"] == [{"name": "stdout", "output_type": "stream", "text": ["made in <tmp>\n"]}]
    assert cells[1]["outputs"] == [] and cells[2]["outputs"][0]["text"] == ["kept from before\n"]
    assert cells[3]["outputs"] == [{"data": {"text/plain": ["{'rows': 2}"]}, "execution_count": None, "metadata": {},
                                    "output_type": "execute_result"}]
    assert so.check(p) == []                                                     # a second run saves the same
