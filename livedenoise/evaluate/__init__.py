"""The papers' experiments, on the simulator or on real pairs, with one report (``livedenoise evaluate``).

What is reproduced (see ``../shared/papers``):

* **Wang et al.** (self-supervised transfer learning): transfer (pretrained backbone + Noise2Self)
  vs Noise2Self from scratch vs supervised, across peak signals (Fig. 1c/2: MSE, SSIM, mean FRC);
  rerun stability over seeds (error bars); self-supervised training-set size 1..50 (Fig. 3);
  L1 vs L2 loss (Fig. 4).
* **CNNT** (Rehman et al.): fine-tuning the backbone with 5/10/20 low/high pairs vs training on
  them from scratch, and robustness across input SNR by averaging 1..64 frames (Fig. 5).

How the simulated tasks are made, and why: a task is one sample type (default filaments, like the
papers' microtubules) on a virtual slide, imaged by a camera whose per-pixel maps the backbone never
saw, at a chosen peak signal in photons. Training images, calibration pairs and test images are
different fields of that slide (test fields come from a band of the slide no training field
touches), so no method is scored on the structure it was trained on. The clean image of a pair is
the mean of ``reference_average`` exposures (CNNT's "average 64" ground truth). Every simulated
score is computed twice: against the simulator's noise-free expected image, which contains the
camera's fixed pattern (per-pixel offset, gain and dark current: averaging frames keeps it, a
spatial denoiser smooths it away), and against the same expected photoelectrons through the
camera's *median* offset, gain and dark current (``*_flat`` columns: the sample alone).

Every trained method records its steps, the step whose weights it kept (``best_step``), why it
stopped and whether it changed the weights at all (``adapted``): a fit that ran 0 steps or kept its
initial weights is labelled so in the report, never shown as a trained result. ``scratch`` (and
``pairs-scratch``) trains a randomly initialised network at the pretraining learning rate with its
own, larger budget until early stopping (``scratch_*`` settings); the report says when it stopped
for another reason and makes no transfer-vs-scratch claim for those settings. Everything is seeded:
a seed picks the fields, the noise and the training randomness; fields are the same at every peak
(as in the papers, where one image set was rescaled to each peak).

Every method is scored by the same code (:func:`livedenoise.metrics.score`, with FRC), and every
model is applied through the product's own :class:`~livedenoise.inference.Denoiser`.
Fits are cached by what defines them, so experiments that share a configuration share the fit.

Modules: :mod:`~livedenoise.evaluate.experiments` (what each experiment and method is, written once),
:mod:`~livedenoise.evaluate.settings`, :mod:`~livedenoise.evaluate.tasks` (the simulated tasks),
:mod:`~livedenoise.evaluate.methods`, :mod:`~livedenoise.evaluate.real_pairs`,
:mod:`~livedenoise.evaluate.result`, :mod:`~livedenoise.evaluate.run` and
:mod:`~livedenoise.evaluate.report`, which reads results without importing the runs.
"""
from __future__ import annotations

from livedenoise.evaluate.experiments import (
    EXPERIMENT_TITLES,
    EXPERIMENTS,
    METHOD_DESCRIPTIONS,
    METRICS,
    SCRATCH_METHODS,
    TRAINED_METHODS,
)
from livedenoise.evaluate.machine import describe_machine, machine_info
from livedenoise.evaluate.methods import (
    Evaluator,
    FitInfo,
    Row,
    apply_method,
    gaussian_baseline,
    nlm_baseline,
    scratch_model,
    with_normalizer,
)
from livedenoise.evaluate.real_pairs import affine_sets_from, evaluate_pairs
from livedenoise.evaluate.report import write_report
from livedenoise.evaluate.result import EvalResult
from livedenoise.evaluate.run import load_result, run_evaluation
from livedenoise.evaluate.settings import EvalConfig, preset
from livedenoise.evaluate.tasks import SimulatedTask

__all__ = [
    "EXPERIMENTS",
    "EXPERIMENT_TITLES",
    "METHOD_DESCRIPTIONS",
    "METRICS",
    "SCRATCH_METHODS",
    "TRAINED_METHODS",
    "EvalConfig",
    "EvalResult",
    "Evaluator",
    "FitInfo",
    "Row",
    "SimulatedTask",
    "affine_sets_from",
    "apply_method",
    "describe_machine",
    "evaluate_pairs",
    "gaussian_baseline",
    "load_result",
    "machine_info",
    "nlm_baseline",
    "preset",
    "run_evaluation",
    "scratch_model",
    "with_normalizer",
    "write_report",
]
