"""The detector behind ``provlib fit`` and ``provlib verdict``: where does one image come from?

- :mod:`.columns`: every per-timestep signal of a model as a ``(family, t)`` column, computed for new images;
- :mod:`.selection`: the columns chosen under a budget of UNet passes per image (greedy, on training rows);
- :mod:`.origin_probe`: the 3-way origin probe (member / generated / external) fitted on one model, stored
  pickle-free, and its calibrated verdicts.
"""
