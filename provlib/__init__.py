"""provlib: provenance of diffusion-model images.

Where does an image come from: a diffusion model's training set, the model's
own generations, or outside?  The package holds the kernels (trajectory
features, samplers, metrics, probes); the notebooks in ``notebooks/`` turn
them into the study's figures and tables.
"""

__version__ = "0.1.0"

import os as _os

if _os.environ.get("PROVLIB_LEDGER_DIR"):  # a batch run counts every UNet pass (provlib.ledger)
    from .ledger import start_from_environment as _start_ledger
    _start_ledger()
