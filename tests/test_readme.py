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
