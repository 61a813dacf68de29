"""The batch driver, run for real (papermill, the venv's python3 kernel) on two
throw-away notebooks, with every output sent to temporary folders."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from provlib import batch, lanes, paths
from provlib.study import order

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

DEMO_PARAMETERS = '''\
profile: str = "tiny"  # profile name
seed: int = 123  # seed (the tiny profile says 0, so the table shows whether it was injected)
label: str = "demo"  # no profile sets this: keeps its default
'''

DEMO_BODY = '''\
import json, os, sys
import matplotlib
import matplotlib.pyplot as plt
from provlib import paths
from provlib.progress import progress_bar

for _ in progress_bar(range(3), desc="demo step"):  # relayed to the driver's terminal, not into the notebook
    pass

fig_dir, rep_dir = paths.figures_dir(profile), paths.reports_dir(profile)
fig_dir.mkdir(parents=True, exist_ok=True)
fig, ax = plt.subplots(figsize=(1, 1))
ax.plot([0, 1], [0, 1])
fig.savefig(fig_dir / "01_demo_fig.png", dpi=20)
rows = {"seed": seed, "label": label, "backend": matplotlib.get_backend().lower(),
        "prefix": sys.prefix, "cwd": os.getcwd(),
        "index status while running": json.loads((rep_dir / "run.json").read_text())["status"]}
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
    write_notebook(folder / "03_sleep.ipynb", 'profile: str = "tiny"  # profile name\n',
                   "import time\ntime.sleep(300)\n")
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
    terminal = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVLIB_OUTPUT_DIR", str(out))
        mp.setenv("PROVLIB_CACHE_DIR", str(out / "cache"))
        record = batch.run_batch("tiny", notebooks_dir=notebooks_dir, only="01", progress_stream=terminal)
    (out / "terminal.txt").write_text(terminal.getvalue())
    return record, out


def test_lists_only_digit_notebooks_in_order(notebooks_dir):
    assert [p.name for p in batch.list_notebooks(notebooks_dir)] == ["01_demo.ipynb", "02_broken.ipynb",
                                                                     "03_sleep.ipynb"]


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
    assert "n_generated" not in injected[0] and "label" not in injected[0]
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
    assert "`n_generated` | `100`" in readme and "`seed` = 0" in readme
    assert f"| numpy | {metadata.version('numpy')} |" in readme
    assert f"| papermill | {metadata.version('papermill')} |" in readme
    saved = json.loads((out / "reports/tiny/run.json").read_text())
    assert saved["status"] == "ok" and saved["profile"] == "tiny" == record["profile"]
    assert saved["parameters"]["n_generated"] == 100
    demo, broken, _ = saved["notebooks"]
    assert demo["status"] == "ok" and demo["wall_seconds"] > 0 and demo["executed_fresh"]
    assert [t["path"] for t in demo["tables"]] == ["01_demo_table.md"]
    assert [f["path"] for f in demo["figures"]] == ["../../figures/tiny/01_demo_fig.png"]
    assert broken["status"] == "skipped" and broken["executed"] is None


def test_committed_outputs_name_no_folder_of_the_machine_that_ran_them(demo_run, notebooks_dir):
    """papermill's input and output paths and the run's Python are relative to the repository (or the output
    root); a folder outside both is named by its last part only."""
    record, out = demo_run
    executed = json.loads((out / "reports/tiny/01_demo.ipynb").read_text())
    assert executed["metadata"]["papermill"]["input_path"] == "01_demo.ipynb"     # outside the repository
    assert executed["metadata"]["papermill"]["output_path"] == "reports/tiny/01_demo.ipynb"
    for path in (out / "reports/tiny").iterdir():   # (the demo's own table shows its cwd on purpose)
        if path.suffix in (".ipynb", ".json"):
            text = path.read_text()
            assert str(out) not in text and str(notebooks_dir) not in text, path.name
            assert str(paths.REPO_ROOT) not in text, path.name


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


def test_the_index_says_running_while_the_run_is_under_way(demo_run):
    _, out = demo_run
    assert "| index status while running | running |" in (out / "reports/tiny/01_demo_table.md").read_text()
    assert json.loads((out / "reports/tiny/run.json").read_text())["status"] == "ok"


def test_progress_goes_to_the_terminal_not_into_the_executed_notebook(demo_run):
    _, out = demo_run
    terminal = (out / "terminal.txt").read_text()
    assert "demo step" in terminal and "3/3" in terminal
    assert "[1/1] 01_demo.ipynb: ok in" in terminal
    executed = nbformat.read(out / "reports/tiny/01_demo.ipynb", as_version=4)
    texts = [o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not any("demo step" in t for t in texts)
    assert "PROVLIB_PROGRESS_FILE" not in os.environ  # the relay cleaned up after itself


def test_overridden_parameters_reach_the_notebook_and_the_index(notebooks_dir, output_dir):
    record = batch.run_batch("tiny", notebooks_dir=notebooks_dir, only="01", overrides={"label": "other"},
                             progress_stream=io.StringIO())
    assert "| label | other |" in (output_dir / "reports/tiny/01_demo_table.md").read_text()
    assert record["overrides"] == {"label": "other"}
    assert "-p label 'other'" in (output_dir / "reports/tiny/README.md").read_text()


def test_a_second_run_on_the_same_folders_is_refused(notebooks_dir, output_dir):
    with batch.batch_lock(output_dir / "reports" / "tiny"):
        with pytest.raises(RuntimeError, match=f"another batch run \\(pid {os.getpid()}\\) is writing"):
            batch.run_batch("tiny", notebooks_dir=notebooks_dir, only="01")


def _batch(output_dir, *args):
    env = {**os.environ, "PROVLIB_OUTPUT_DIR": str(output_dir), "PROVLIB_CACHE_DIR": str(output_dir / "cache")}
    return subprocess.run([sys.executable, "-m", "provlib.batch", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_refused_run_is_one_line_with_exit_status_2(notebooks_dir, output_dir):
    base = ("--profile", "tiny", "--notebooks-dir", notebooks_dir)
    cases = {"an unknown parameter": (*base, "-p", "nosuch", "1"),
             "a bad value": (*base, "-p", "label", "3"),
             "no such notebook": (*base, "--only", "99")}
    for what, args in cases.items():
        out = _batch(output_dir, *args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("python -m provlib.batch: error: "), \
            (what, out.stderr)
    with batch.batch_lock(output_dir / "reports" / "tiny"):   # a second run into the same output folder
        out = _batch(output_dir, *base, "--only", "01")
    assert out.returncode == 2 and "another batch run" in out.stderr and "Traceback" not in out.stderr


def _start_sleeping_run(notebooks_dir, output_dir, *more) -> subprocess.Popen:
    env = {**os.environ, "PROVLIB_OUTPUT_DIR": str(output_dir), "PROVLIB_CACHE_DIR": str(output_dir / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "provlib.batch", "--profile", "tiny", "--notebooks-dir",
                             str(notebooks_dir), "--only", "03", *more], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = output_dir / "reports/tiny/.03_sleep.partial.ipynb"
    deadline = time.time() + 120
    while time.time() < deadline and not partial.exists():
        time.sleep(0.2)
    assert partial.exists(), "the sleeping notebook should be running"
    time.sleep(1.0)
    return proc


def test_after_sigkill_the_index_says_running_and_the_next_run_cleans_up(notebooks_dir, output_dir):
    batch.run_batch("tiny", notebooks_dir=notebooks_dir, only="01", progress_stream=io.StringIO())
    reports = output_dir / "reports/tiny"
    assert json.loads((reports / "run.json").read_text())["status"] == "ok"
    proc = _start_sleeping_run(notebooks_dir, output_dir)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its kernel, as the OOM killer or a lost machine would
    proc.wait()
    saved = json.loads((reports / "run.json").read_text())
    assert saved["status"] == "running"  # not the previous run's "ok"
    assert [nb["status"] for nb in saved["notebooks"]] == ["skipped", "skipped", "pending"]
    assert "If no batch run is alive, this run was killed" in (reports / "README.md").read_text()
    assert (reports / ".03_sleep.partial.ipynb").exists()
    batch.run_batch("tiny", notebooks_dir=notebooks_dir, only="01", progress_stream=io.StringIO())
    assert not list(reports.glob(".*.partial.ipynb"))  # the killed run's leftovers are gone
    assert json.loads((reports / "run.json").read_text())["status"] == "ok"


def test_sigterm_ends_the_run_as_interrupted(notebooks_dir, output_dir):
    proc = _start_sleeping_run(notebooks_dir, output_dir)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    os.killpg(proc.pid, signal.SIGKILL) if _alive(proc.pid) else None
    saved = json.loads((output_dir / "reports/tiny/run.json").read_text())
    assert saved["status"] == "interrupted (03_sleep)"
    assert saved["notebooks"][2]["status"] == "interrupted"
    assert not (output_dir / "reports/tiny/03_sleep.ipynb").exists()


def test_sigterm_stops_the_lanes_and_their_kernels(notebooks_dir, output_dir):
    proc = _start_sleeping_run(notebooks_dir, output_dir, "--lanes", "2")
    proc.send_signal(signal.SIGTERM)   # to the driver alone
    assert proc.wait(timeout=60) != 0
    deadline = time.time() + 30
    while _alive(proc.pid) and time.time() < deadline:   # the lanes' workers and kernels end too
        time.sleep(0.5)
    assert not _alive(proc.pid), "a lane's worker or kernel outlived the run"
    saved = json.loads((output_dir / "reports/tiny/run.json").read_text())
    assert saved["status"] == "interrupted (03_sleep)"
    assert saved["notebooks"][2]["status"] == "interrupted"


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_every_notebook_parameter_is_visible_to_papermill():
    """papermill parses each assignment of the parameters cell (an annotation it cannot read, such as
    ``int | None``, hides the parameter from --help-notebook and from the driver's checks)."""
    import papermill

    from provlib import paths
    from provlib.study.profiles import PROFILES

    for nb in batch.list_notebooks(paths.NOTEBOOKS_DIR):
        cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        assigned = [line.split("=")[0].split(":")[0].strip() for line in cell.source.splitlines()
                    if "=" in line and not line.lstrip().startswith("#")]
        declared = papermill.inspect_notebook(str(nb))
        assert sorted(declared) == sorted(assigned), nb.name
        assert {"profile", "seed"} <= set(declared) <= set(PROFILES["cpu"]), nb.name


def test_a_notebook_kernel_records_versions_without_importing_the_batch_driver():
    # every notebook imports provlib.report; papermill (the driver's) costs about 1.5 s per kernel
    code = ("import sys; from provlib import report; v = report.versions(); "
            "print(v['provlib'], 'papermill' in sys.modules, 'provlib.batch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [metadata.version("provlib"), "False", "False"]


LANE_PARAMETERS = 'profile: str = "tiny"  # profile name\n'
UNET_WORK = '''\
import time, torch
from provlib import io
from provlib.models import UNetConfig, build_unet
unet = build_unet(UNetConfig(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4))
def compute():
    with torch.no_grad():
        return {"out": unet(torch.zeros(6, 1, 8, 8), torch.zeros(6, dtype=torch.long)).sample}
io.cached("lane-demo", {"n": 6}, compute)
'''


@pytest.fixture(scope="module")
def lane_run(tmp_path_factory) -> tuple[dict, Path]:
    """``01`` computes a cached artifact with 6 UNet rows and sleeps; ``02`` needs ``01`` and reads it; ``03``
    needs nothing and sleeps: run in two lanes."""
    folder = tmp_path_factory.mktemp("lane-notebooks")
    write_notebook(folder / "01_first.ipynb", LANE_PARAMETERS,
                   UNET_WORK + "time.sleep(4)\nopen('01.done', 'w').write(str(time.time()))\n")
    write_notebook(folder / "02_second.ipynb", LANE_PARAMETERS,
                   UNET_WORK + "import os\nassert os.path.exists('01.done')\n")
    write_notebook(folder / "03_other.ipynb", LANE_PARAMETERS,
                   "import time\nopen('03.start', 'w').write(str(time.time()))\ntime.sleep(4)\n")
    out = tmp_path_factory.mktemp("lane-out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVLIB_OUTPUT_DIR", str(out))
        mp.setenv("PROVLIB_CACHE_DIR", str(out / "cache"))
        mp.setattr(order, "NEEDS", {"02": ("01",)})
        record = batch.run_batch("tiny", notebooks_dir=folder, lanes=2, progress_stream=io.StringIO())
    return record, folder


def test_lanes_run_notebooks_at_once_but_never_before_what_they_need(lane_run):
    record, folder = lane_run
    assert record["status"] == "ok" and [nb["status"] for nb in record["notebooks"]] == ["ok"] * 3
    first_done = float((folder / "01.done").read_text())
    assert float((folder / "03.start").read_text()) < first_done   # 03 ran beside 01
    assert record["lanes"] == {"lanes": 2, "cores": os.cpu_count(), "threads_per_lane": max(1, os.cpu_count() // 2)}


def test_the_index_shows_each_notebooks_passes_and_whose_artifacts_it_read(lane_run):
    record, _ = lane_run
    first, second, other = (nb["ledger"] for nb in record["notebooks"])
    assert (first["forward"], first["backward"]) == (6, 0)       # computed the artifact
    assert (second["forward"], second["backward"]) == (0, 0)     # read it from the cache
    assert second["reads_from"] == ["01_first"] and first["reads_from"] == [] == other["reads_from"]
    assert first["floor_seconds"] is None and record["floor"] is None   # tiny: no floor measured
    assert record["ledger"]["forward"] == 6


def test_a_failing_notebook_in_a_lane_stops_the_run(notebooks_dir, output_dir):
    with pytest.raises(lanes.NotebookFailed, match="02_broken: RuntimeError: boom"):
        batch.run_batch("tiny", notebooks_dir=notebooks_dir, only=["01", "02"], lanes=2,
                        progress_stream=io.StringIO())
    saved = json.loads((output_dir / "reports/tiny/run.json").read_text())
    assert saved["status"] == "failed (02_broken)"
    assert (output_dir / "reports/tiny/02_broken.failed.ipynb").is_file()


def test_lanes_must_be_a_positive_number(notebooks_dir, output_dir):
    with pytest.raises(batch.RunRefused, match="lanes must be a positive number"):
        batch.run_batch("tiny", notebooks_dir=notebooks_dir, lanes=0)


def test_lanes_expect_the_committed_times_when_the_output_folder_has_no_run(output_dir):
    """A check run writes into an empty folder: the lanes' order still comes from the committed run."""
    committed = json.loads((paths.REPO_ROOT / "reports/cpu/run.json").read_text())
    expected = batch.expected_seconds("cpu")
    assert expected and expected == {nb["stem"]: nb["wall_seconds"] for nb in committed["notebooks"]
                                     if nb.get("wall_seconds")}


def test_the_lanes_expect_the_last_runs_times_not_this_runs_first_index(notebooks_dir, output_dir, monkeypatch):
    """A run rewrites run.json (every notebook pending) before its lanes start: their order must come from the
    last run's times, read before that, and a record without times falls back to the committed run."""
    seen = {}

    def fake_lanes(todo, lanes, expected, launch, finished):
        seen.update(expected)
        for run in todo:
            run.status, run.error, run.wall_seconds = "ok", None, 1.0

    folder = output_dir / "reports" / "tiny"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"notebooks": [{"stem": "01_demo", "wall_seconds": 42.0}]}))
    monkeypatch.setattr(batch, "run_in_lanes", fake_lanes)
    batch.run_batch("tiny", notebooks_dir=notebooks_dir, only=["01"], lanes=2, progress_stream=io.StringIO())
    assert seen == {"01_demo": 42.0}
    pending = json.loads((folder / "run.json").read_text())
    pending["notebooks"] = [{**nb, "wall_seconds": None} for nb in pending["notebooks"]]
    (folder / "run.json").write_text(json.dumps(pending))   # as an interrupted run leaves it
    committed = paths.REPO_ROOT / "reports" / "tiny" / "run.json"
    fallback = json.loads(committed.read_text()) if committed.is_file() else {"notebooks": []}
    assert batch.expected_seconds("tiny") == {nb["stem"]: nb["wall_seconds"] for nb in fallback["notebooks"]
                                             if nb.get("wall_seconds")}
