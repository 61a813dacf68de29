"""A figure is a function of the data and the run's seed: drawn twice, the same bytes."""
from __future__ import annotations

import io

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from provlib import report  # noqa: E402


def _strip_plot_png(seed: int) -> bytes:
    """Notebook 06's plot (seaborn's jittered strip plot) after the notebook's setup, as PNG bytes."""
    report.setup("tiny", seed=seed)
    np.random.random(3)   # whatever the notebook draws before plotting, drawn the same way each time
    data = pd.DataFrame({"scope": ["a", "b"] * 10, "method": ["x"] * 10 + ["y"] * 10,
                         "tpr": np.linspace(0, 1, 20)})
    fig, ax = plt.subplots(figsize=(3, 2))
    sns.stripplot(data=data, x="scope", y="tpr", hue="method", dodge=True, ax=ax, size=4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore:these values differ")
def test_jittered_points_are_seeded_by_the_run():
    np.random.seed(None)   # an unseeded global state before the notebook starts
    first = _strip_plot_png(0)
    np.random.seed(None)
    assert _strip_plot_png(0) == first
    assert _strip_plot_png(1) != first   # the jitter is drawn, from the run's seed
