"""The notebooks' declared order (provlib/study/order.py) and the order lanes start them in."""
from __future__ import annotations

from provlib.batch import list_notebooks
from provlib.paths import NOTEBOOKS_DIR
from provlib.study import order

STEMS = [nb.stem for nb in list_notebooks(NOTEBOOKS_DIR)]


def test_every_declared_need_is_an_earlier_notebook():
    prefixes = [order.prefix(s) for s in STEMS]
    for nb, needs in order.NEEDS.items():
        assert nb in prefixes, f"NEEDS names {nb}, which is no notebook"
        for n in needs:
            assert n in prefixes and prefixes.index(n) < prefixes.index(nb), f"{nb} needs {n}: not an earlier notebook"


def test_lanes_start_the_longest_chain_first():
    stems = ["01_a", "02_b", "03_c", "04_d"]
    saved = dict(order.NEEDS)
    try:
        order.NEEDS.clear()
        order.NEEDS.update({"02": ("01",), "04": ("01",)})
        expected = {"01_a": 10, "02_b": 100, "03_c": 50, "04_d": 5}
        assert order.lane_order(stems, expected) == ["01_a", "02_b", "03_c", "04_d"]  # 01 -> 02 is 110 s
        assert order.closure("02_b", stems) == {"01_a"} and order.closure("03_c", stems) == set()
        assert order.lane_order(stems, {"03_c": 500}) == ["03_c", "01_a", "02_b", "04_d"]
    finally:
        order.NEEDS.clear()
        order.NEEDS.update(saved)


def test_what_the_committed_cpu_run_read_is_what_the_order_declares():
    """Every notebook whose cached artifacts a notebook of the committed cpu run read (its ledger's
    ``reads_from``) is one the declared order runs before it, so lanes never start it too early.  A read from
    a later notebook is an artifact both compute (in the in-order run the reader computes it): not a need."""
    import json

    from provlib import paths

    record = json.loads((paths.REPO_ROOT / "reports/cpu/run.json").read_text())
    checked = 0
    for nb in record["notebooks"]:
        ledger = nb.get("ledger") or {}
        if "reads_from" in ledger:
            earlier = {s for s in ledger["reads_from"] if STEMS.index(s) < STEMS.index(nb["stem"])}
            assert earlier <= order.closure(nb["stem"], STEMS), nb["stem"]
            checked += 1
    assert checked == len(record["notebooks"]), "the committed run predates the ledger: rerun make reproduce"
