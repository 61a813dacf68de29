"""Membership-inference attacks on a diffusion model, one module per peer method.

Sign convention, for every ``*_score`` here: **higher means "member"**.  Raw
measurements keep their natural direction and their own names
(:func:`pia_distance`, :func:`sima_norm`, :func:`secmi_t_error`: lower = member).

| name        | function                    | reads                                         |
|-------------|-----------------------------|-----------------------------------------------|
| loss        | :func:`loss_score`          | -L_t at one t, seeded noise (Matsumoto et al.)|
| pia / pian  | :func:`pia_score`           | eps consistency at t from eps_theta(x0, 0)    |
| secmi_stat  | :func:`secmi_score`         | DDIM round-trip t-error (Duan et al.)         |
| secmi_nn    | :func:`secmi_nn`            | a ResNet on the round-trip residual map       |
| gsa1 / gsa2 | :func:`gsa_features`        | per-layer gradient norms + boosted trees      |
| sima        | :func:`sima_score`          | eps_theta(x0, t) at the clean image (Rao et al.)|
| blind       | :func:`blind_scores`        | the images alone (no model)                   |
| sedid_stat  | :func:`sedid_score`         | SecMI's t-error, for generated images (Ma et al.)|
| sedid_nn    | :func:`sedid_nn`            | a ResNet on the intermediate results at T_SE  |

SeDID detects the model's *generated* images: its scores are higher for them.

:data:`ATTACKS` names them for the harness; :func:`passes` gives each one's
cost in UNet passes per image (:mod:`.passes`, where every pass of the package is counted).
"""
from __future__ import annotations

from .blind import blind_scores
from .gsa import gsa_classifier, gsa_features, gsa_scores
from .loss import loss_score
from .passes import passes
from .pia import pia_distance, pia_score
from .secmi import secmi_nn, secmi_score, secmi_t_error
from .sedid import sedid_nn, sedid_score, sedid_t_error
from .sima import sima_norm, sima_norms, sima_score

ATTACKS = {
    "loss": "Loss (Matsumoto et al.): -L_t at one t",
    "pia": "PIA (Kong et al.): -||eps0 - eps_theta(x_t, t)||_4^4, eps0 = eps_theta(x0, 0)",
    "pian": "PIAN: PIA with eps0 rescaled to mean |eps0| = sqrt(2/pi)",
    "secmi_stat": "SecMI_stat (Duan et al.): -t-error of a DDIM round trip",
    "secmi_nn": "SecMI_NNs: ResNet on the round-trip residual |x_t - x_hat_t|",
    "gsa1": "GSA_1 (Pang et al.): per-layer ||grad of the mean loss over 10 t||^2, boosted trees",
    "gsa2": "GSA_2: per-layer mean over 10 t of ||grad L_t||^2, boosted trees",
    "sima": "SimA (Rao et al.): -||eps_theta(x0, t)||_4^4 at the clean image",
    "blind": "model-blind: ResNet-18-design CNN on the images alone",
    "sedid_stat": "SeDID_stat (Ma et al.): -t-error at T_SE (SecMI's t_sec), higher = generated",
    "sedid_nn": "SeDID_NNs: ResNet on the intermediate results x_t and x_hat_t at T_SE",
    "trajectory": "Tracing the Roots: linear probe on L_t, ||grad_x L_t||^2, ||grad_theta L_t||^2 over a t grid",
}


__all__ = ["ATTACKS", "passes", "loss_score", "pia_score", "pia_distance", "secmi_t_error", "secmi_score",
           "secmi_nn", "sedid_t_error", "sedid_score", "sedid_nn", "gsa_features", "gsa_classifier", "gsa_scores",
           "sima_score", "sima_norm", "sima_norms", "blind_scores"]
