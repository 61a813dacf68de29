"""Kernels: pure functions of (model, scheduler, images, timesteps, noise).

- :mod:`.trajectory`: L_t, ||grad_x L_t||^2, ||grad_theta L_t||^2 per sample and timestep;
- :mod:`.persample`: per-sample (and per-layer) parameter-gradient norms from one backward;
- :mod:`.ddim`: deterministic DDIM steps both ways, inversion, the stepwise t-error;
- :mod:`.condition`: a kernel's input (images, or a latent model's latents) and condition (text embeddings or
  class labels, one row per sample), passed to the UNet the way it takes them.

Kernels import nothing from the attacks or the study.
"""
