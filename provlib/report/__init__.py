"""What the notebooks write, with its provenance (:mod:`.outputs`), and what every notebook shares: its setup,
numbers with their intervals, the papers whose claims they check (:mod:`.notebook`), and how a claim is judged
(:mod:`.verdicts`)."""
from . import verdicts
from .notebook import OURS, SEDID, TRACING_THE_ROOTS, TRAINING_DATA_ATTRIBUTION, bracket, interval, numbers_say, setup
from .outputs import CLAIM_FIELDS, PACKAGES, provenance, save_claims, save_figure, save_table, versions

__all__ = ["CLAIM_FIELDS", "OURS", "PACKAGES", "SEDID", "TRACING_THE_ROOTS", "TRAINING_DATA_ATTRIBUTION", "bracket",
           "interval", "numbers_say", "provenance", "save_claims", "save_figure", "save_table", "setup", "verdicts", "versions"]
