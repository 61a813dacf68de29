"""What the notebooks write, with its provenance (:mod:`.outputs`)."""
from .outputs import CLAIM_FIELDS, PACKAGES, provenance, save_claims, save_figure, save_table, versions

__all__ = ["CLAIM_FIELDS", "PACKAGES", "provenance", "save_claims", "save_figure", "save_table", "versions"]
