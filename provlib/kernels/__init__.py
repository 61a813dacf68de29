"""Kernels: pure functions of (model, scheduler, images, timesteps, noise).

- :mod:`.trajectory`: L_t, ||grad_x L_t||^2, ||grad_theta L_t||^2 per sample and timestep;
- :mod:`.persample`: per-sample (and per-layer) parameter-gradient norms from one backward.

Kernels import nothing from the attacks or the study.
"""
