"""The batch driver, run for real (papermill, the venv's python3 kernel) on two
throw-away notebooks, with every output sent to temporary folders."""
from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from provlib import batch

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

DEMO_PARAMETERS = '''\
profile: str = "tiny"  # profile name
seed: int = 123  # seed (the tiny profile says 0, so the table shows whether it was injected)
label: str = "demo"  # no profile sets this: keeps its default
'''

DEMO_BODY = '''\
import os, sys
import matplotlib
import matplotlib.pyplot as plt
from provlib import paths

fig_dir, rep_dir = paths.figures_dir(profile), paths.reports_dir(profile)
fig_dir.mkdir(parents=True, exist_ok=True)
fig, ax = plt.subplots(figsize=(1, 1))
ax.plot([0, 1], [0, 1])
fig.savefig(fig_dir / "01_demo_fig.png", dpi=20)
rows = {"seed": seed, "label": label, "backend": matplotlib.get_backend().lower(),
        "prefix": sys.prefix, "cwd": os.getcwd()}
table = "| key | value |\\n|---|---|\\n" + "".join(f"| {k} | {v} |\\n" for k, v in rows.items())
(rep_dir / "01_demo_table.md").write_text(table)
'''


def write_notebook(path: Path, parameters: str, body: str) -> None:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"),
                nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def notebooks_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("notebooks")
    write_notebook(folder / "01_demo.ipynb", DEMO_PARAMETERS, DEMO_BODY)
    write_notebook(folder / "02_broken.ipynb", 'profile: str = "tiny"  # profile name\n',
                   'raise RuntimeError("boom")\n')
    write_notebook(folder / "scratch.ipynb", "", "")  # no leading digit: not part of the study
    return folder


@pytest.fixture
def output_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PROVLIB_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "out"


@pytest.fixture(scope="module")
def demo_run(notebooks_dir, tmp_path_factory) -> tuple[dict, Path]:
    """One real batch run of ``01_demo`` with the tiny profile: (record, output root)."""
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVLIB_OUTPUT_DIR", str(out))
        mp.setenv("PROVLIB_CACHE_DIR", str(out / "cache"))
        record = batch.run_batch("tiny", notebooks_dir=notebooks_dir, only="01")
    return record, out


def test_lists_only_digit_notebooks_in_order(notebooks_dir):
    assert [p.name for p in batch.list_notebooks(notebooks_dir)] == ["01_demo.ipynb", "02_broken.ipynb"]


def test_unknown_profile_is_a_clear_error(notebooks_dir, output_dir):
    with pytest.raises(ValueError, match="unknown profile 'nope'.*tiny"):
        batch.run_batch("nope", notebooks_dir=notebooks_dir)
    with pytest.raises(SystemExit):
        batch.main(["--profile", "nope", "--notebooks-dir", str(notebooks_dir)])
    assert not output_dir.exists()


def test_only_prefix_that_matches_nothing_is_an_error(notebooks_dir, output_dir):
    with pytest.raises(ValueError, match="matches no notebook"):
        batch.run_batch("tiny", notebooks_dir=notebooks_dir, only=["09"])


def test_executed_notebook_gets_only_the_parameters_it_declares(demo_run):
    _, out = demo_run
    executed = nbformat.read(out / "reports/tiny/01_demo.ipynb", as_version=4)
    injected = [c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert 'profile = "tiny"' in injected[0] and "seed = 0" in injected[0]
    assert "n_member" not in injected[0] and "label" not in injected[0]
    assert not (out / "reports/tiny/02_broken.ipynb").exists()  # not selected by --only 01


def test_kernel_is_this_venv_with_agg_backend_in_notebooks_dir(demo_run, notebooks_dir):
    _, out = demo_run
    table = (out / "reports/tiny/01_demo_table.md").read_text()
    assert "| seed | 0 |" in table and "| label | demo |" in table
    assert "| backend | agg |" in table
    assert f"| prefix | {sys.prefix} |" in table
    assert f"| cwd | {notebooks_dir} |" in table


def test_index_links_every_output_and_records_the_run(demo_run):
    record, out = demo_run
    readme = (out / "reports/tiny/README.md").read_text()
    assert "](01_demo.ipynb)" in readme
    assert "](01_demo_table.md)" in readme and "| label | demo |" in readme  # table linked and inline
    assert "![01_demo_fig.png](../../figures/tiny/01_demo_fig.png)" in readme
    assert (out / "reports/tiny" / "../../figures/tiny/01_demo_fig.png").is_file()
    assert "`n_member` | `100`" in readme and "`seed` = 0" in readme
    assert f"| numpy | {metadata.version('numpy')} |" in readme
    assert f"| papermill | {metadata.version('papermill')} |" in readme
    saved = json.loads((out / "reports/tiny/run.json").read_text())
    assert saved["status"] == "ok" and saved["profile"] == "tiny" == record["profile"]
    assert saved["parameters"]["n_member"] == 100
    demo, broken = saved["notebooks"]
    assert demo["status"] == "ok" and demo["wall_seconds"] > 0 and demo["executed_fresh"]
    assert [t["path"] for t in demo["tables"]] == ["01_demo_table.md"]
    assert [f["path"] for f in demo["figures"]] == ["../../figures/tiny/01_demo_fig.png"]
    assert broken["status"] == "skipped" and broken["executed"] is None


def test_failing_notebook_is_recorded_then_raised(notebooks_dir, output_dir):
    with pytest.raises(PapermillExecutionError, match="boom"):
        batch.run_batch("tiny", notebooks_dir=notebooks_dir, only=["02_broken"])
    reports = output_dir / "reports/tiny"
    assert not (reports / "02_broken.ipynb").exists()
    assert (reports / "02_broken.failed.ipynb").is_file()
    assert not list(reports.glob(".*.partial.ipynb"))
    saved = json.loads((reports / "run.json").read_text())
    assert saved["status"] == "failed (02_broken)"
    assert "RuntimeError: boom" in saved["notebooks"][1]["error"]
    readme = (reports / "README.md").read_text()
    assert "**failed**" in readme and "](02_broken.failed.ipynb)" in readme
