"""The check mode: outputs regenerated and compared with the committed ones (provlib.check, report.compare)."""
from __future__ import annotations

import io
import json
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from provlib import check  # noqa: E402
from provlib.report.compare import compare_file, compare_folders  # noqa: E402


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _png(path, *, shade=0.0, size=(2, 2)):
    fig, ax = plt.subplots(figsize=size)
    ax.imshow(np.full((4, 4), 0.5 + shade), vmin=0, vmax=1, cmap="gray")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=20, metadata={"Software": None})
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def test_a_table_differs_in_a_number_but_not_in_its_measured_time(tmp_path):
    head = "method,auc,ms / image\n"
    a = _write(tmp_path / "a/t.csv", head + "Loss,0.812,3.1\nPIA,0.900,5.0\n")
    assert compare_file(a, _write(tmp_path / "b/t.csv", head + "Loss,0.812,3.9\nPIA,0.900,4.0\n")).status == "same"
    assert "measured time" in compare_file(a, tmp_path / "b/t.csv").detail
    got = compare_file(a, _write(tmp_path / "c/t.csv", head + "Loss,0.813,3.1\nPIA,0.900,5.0\n"))
    assert got.status == "differs" and "auc: '0.812' -> '0.813'" in got.detail
    assert compare_file(a, _write(tmp_path / "d/t.csv", head + "Loss,0.812,3.1\n")).status == "differs"


def test_markdown_tables_are_compared_by_cell_and_their_text_by_line(tmp_path):
    md = "Caption.\n\n| method | auc | seconds |\n|---|---|---|\n| Loss | {auc} | {s} |\n\n_footer_\n"
    a = _write(tmp_path / "a/t.md", md.format(auc="0.812", s="10"))
    assert compare_file(a, _write(tmp_path / "b/t.md", md.format(auc="0.812", s="12"))).status == "same"
    assert compare_file(a, _write(tmp_path / "c/t.md", md.format(auc="0.800", s="10"))).status == "differs"
    other = _write(tmp_path / "d/t.md", md.format(auc="0.812", s="10").replace("Caption", "Other"))
    assert compare_file(a, other).status == "differs"


def test_figures_by_bytes_then_by_pixels_and_a_pdf_by_its_png_twin(tmp_path):
    a = _png(tmp_path / "a/f.png")
    assert compare_file(a, _png(tmp_path / "b/f.png")).line == "f.png: same"
    assert compare_file(a, _png(tmp_path / "c/f.png", shade=0.3)).status == "differs"
    assert compare_file(a, _png(tmp_path / "d/f.png", size=(3, 2))).status == "differs"
    _write(tmp_path / "a/f.pdf", "%PDF one")
    _write(tmp_path / "b/f.pdf", "%PDF two")
    _write(tmp_path / "c/f.pdf", "%PDF two")
    assert compare_file(tmp_path / "a/f.pdf", tmp_path / "b/f.pdf").status == "same"       # its PNG is the same
    assert "PNG twin" in compare_file(tmp_path / "a/f.pdf", tmp_path / "b/f.pdf").detail
    assert compare_file(tmp_path / "a/f.pdf", tmp_path / "c/f.pdf").status == "differs"


def test_a_png_within_the_tolerance_is_the_same_and_says_so(tmp_path):
    a = _png(tmp_path / "a/f.png")
    pixels = matplotlib.image.imread(a)
    pixels[0, 0, 0] = pixels[0, 0, 0] - 1 / 255   # one channel of one pixel, one step
    (tmp_path / "b").mkdir()
    matplotlib.image.imsave(tmp_path / "b/f.png", pixels)
    got = compare_file(a, tmp_path / "b/f.png")
    assert got.status == "same" and "pixels within" in got.detail


def test_claims_are_compared_field_by_field(tmp_path):
    claim = {"claim": "A beats B", "our_value": "0.8 vs 0.7", "outcome": "holds"}
    a = _write(tmp_path / "a/01_x_claims.json", json.dumps({"provenance": "p", "claims": [claim]}))
    same = _write(tmp_path / "b/01_x_claims.json", json.dumps({"provenance": "p", "claims": [claim]}, indent=1))
    assert compare_file(a, same).status == "same"
    moved = _write(tmp_path / "c/01_x_claims.json",
                   json.dumps({"provenance": "p", "claims": [{**claim, "outcome": "inconclusive"}]}))
    got = compare_file(a, moved)
    assert got.status == "differs" and "outcome 'holds' -> 'inconclusive'" in got.detail


def test_outputs_belong_to_the_notebook_with_the_longest_stem_and_missing_ones_differ(tmp_path):
    _write(tmp_path / "a/01_a_table.csv", "x\n1\n")
    _write(tmp_path / "a/01_ab_table.csv", "x\n1\n")
    _write(tmp_path / "b/01_ab_table.csv", "x\n1\n")
    _write(tmp_path / "a/02_c_table.csv", "x\n1\n")
    got = compare_folders(tmp_path / "a", tmp_path / "b", ["01_a", "01_ab", "02_c"], ["01_a", "01_ab"])
    assert [c.line for c in got] == ["01_a_table.csv: differs (committed, not regenerated)",
                                     "01_ab_table.csv: same"]


NOTEBOOK = '''\
import numpy as np
import pandas as pd
from provlib import paths
d = paths.reports_dir(profile)
d.mkdir(parents=True, exist_ok=True)
pd.DataFrame({"seed": [seed], "value": [np.round(np.random.default_rng(seed).random(), 6)]}).to_csv(
    d / "01_demo_table.csv", index=False)
'''


def test_the_check_regenerates_into_a_scratch_folder_and_finds_what_changed(tmp_path, monkeypatch, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell('profile: str = "tiny"  # profile\nseed: int = 0  # seed',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(NOTEBOOK)]
    nbformat.write(nb, notebooks / "01_demo.ipynb")
    committed = tmp_path / "repo"
    monkeypatch.setenv("PROVLIB_OUTPUT_DIR", str(committed))
    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(tmp_path / "cache"))
    from provlib import batch
    batch.run_batch("tiny", notebooks_dir=notebooks, progress_stream=io.StringIO())
    table = committed / "reports/tiny/01_demo_table.csv"
    results, scratch, record = check.check("tiny", notebooks_dir=notebooks, progress_stream=io.StringIO())
    assert record["status"] == "ok" and scratch != committed and (scratch / "reports/tiny/01_demo_table.csv").is_file()
    assert {r.name: r.status for r in results} == {"01_demo_table.csv": "same", "claims.md": "same"}
    table.write_text(table.read_text().replace("0,0.", "0,1."))   # a committed number no longer reproduced
    results, again, _ = check.check("tiny", notebooks_dir=notebooks, only=["01"], progress_stream=io.StringIO())
    assert [r.status for r in results] == ["differs"] and "value" in results[0].detail
    assert table.read_text().startswith("seed,value")   # the committed outputs are read, never written
    for folder in (scratch, again):   # left for the reviewer to inspect; the test removes its own
        shutil.rmtree(folder)
