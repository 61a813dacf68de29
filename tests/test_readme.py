"""The README's sentences computed from the committed cpu report stay equal to it."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_budget_advice_is_the_reports():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- advice:.*?-->\s*(.*?)\s*<!-- /advice -->", readme, re.S)
    assert block, "README lacks the advice block"
    said = " ".join(block.group(1).split())
    report = " ".join((ROOT / "reports/cpu/14_combined_probe_advice.md").read_text().split())
    sentence = re.search(r"\*\*Which detector at which budget\.\*\* (.*?\.)(?= \|)", report)
    assert sentence, "the cpu advice table lacks its sentence"
    assert said == f"**Which detector at which budget.** {sentence.group(1)}"


def test_the_default_budget_is_the_reports_and_the_shipped_probes_use_it():
    import json

    from provlib.detector.origin_probe import DEFAULT_BUDGET, DEFAULT_CALIBRATION_ROWS, OriginProbe
    from provlib.paths import EMBEDDED_PROBES_DIR
    from provlib.detector.columns import total_passes

    report = (ROOT / "reports/cpu/15_origin_budget_default.md").read_text()
    found = re.search(r"\*\*(\d+) UNet passes per image\*\*", report)
    assert found and int(found.group(1)) == DEFAULT_BUDGET, "provlib.detector.origin_probe.DEFAULT_BUDGET is not notebook 15's"
    shipped = sorted(p.name for p in EMBEDDED_PROBES_DIR.iterdir() if p.is_dir())
    assert shipped == ["fm1000", "fm500", "sd1000"]
    for name in shipped:   # each fitted at the default budget, holding back enough rows per kind to certify 1%
        probe = OriginProbe.load(EMBEDDED_PROBES_DIR / name)
        assert probe.info["budget"] == DEFAULT_BUDGET and total_passes(probe.columns) <= DEFAULT_BUDGET
        assert set(probe.info["calibration_rows"].values()) == {DEFAULT_CALIBRATION_ROWS}
        assert max(probe.info["certifiable_fpr"].values()) <= 0.01
        meta = json.loads((EMBEDDED_PROBES_DIR / name / "probe.json").read_text())
        assert meta["passes_per_image"] == total_passes(probe.columns)


def test_the_timing_statement_is_the_committed_runs():
    import json

    from provlib.report.index import timing_statement

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- timing:.*?-->\s*(.*?)\s*<!-- /timing -->", readme, re.S)
    assert block, "README lacks the timing block"
    record = json.loads((ROOT / "reports/cpu/run.json").read_text())
    assert " ".join(block.group(1).split()) == " ".join(timing_statement(record).split())
