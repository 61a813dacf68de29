"""provlib: provenance of diffusion-model images.

Where does an image come from: a diffusion model's training set, the model's
own generations, or outside?  The package holds the kernels (trajectory
features, samplers, metrics, probes); the notebooks in ``notebooks/`` turn
them into the study's figures and tables.
"""

__version__ = "0.1.0"
