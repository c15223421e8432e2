"""What each experiment and method is: names, titles and descriptions shared by the runs and the report."""
from __future__ import annotations

#: Experiments in report order.
EXPERIMENTS: tuple[str, ...] = ("sweep", "stability", "size", "loss", "pairs", "averages")
EXPERIMENT_TITLES = {
    "sweep": "Transfer vs from scratch vs supervised across peak signal (Wang Fig. 1c/2)",
    "stability": "Rerun stability over seeds (Wang: error bars)",
    "size": "Self-supervised training-set size (Wang Fig. 3)",
    "loss": "L1 vs L2 self-supervised loss (Wang Fig. 4)",
    "pairs": "Fine-tuning with few low/high pairs (CNNT)",
    "averages": "Robustness across input SNR: averages of 1..64 frames (CNNT Fig. 5)",
    "real": "Real low/high pairs",
}
#: What each method is, for the report.
METHOD_DESCRIPTIONS = {
    "noisy": "the noisy input itself",
    "gaussian": "Gaussian blur, sigma 1 px (scikit-image)",
    "nlm": "non-local means (scikit-image; h = 0.8 sigma, sigma estimated from the image)",
    "backbone": "pretrained backbone applied zero-shot (normaliser fitted to the task's frames)",
    "transfer": "backbone + Noise2Self fine-tuning on the task's noisy frames (Wang et al.)",
    "transfer-n2same": "backbone + Noise2Same fine-tuning on the same frames (livedenoise's default objective)",
    "scratch": "same network, randomly initialised, + Noise2Self on the same frames (no pretraining), trained until "
               "early stopping within its own budget",
    "pairs": "backbone + supervised fine-tuning on low/high pairs (CNNT protocol)",
    "pairs-scratch": "same network, randomly initialised, supervised on the same pairs until early stopping",
}
TRAINED_METHODS = ("transfer", "transfer-n2same", "scratch", "pairs", "pairs-scratch")
METRICS = ("mse", "psnr", "ssim", "frc")
#: Scratch methods: a randomly initialised network (their fits use the ``scratch_*`` settings).
SCRATCH_METHODS = ("scratch", "pairs-scratch")
