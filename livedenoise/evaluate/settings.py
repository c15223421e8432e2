"""An evaluation's settings (:class:`EvalConfig`) and the named presets (quick, papers...)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from livedenoise.config import TrainingConfig
from livedenoise.errors import ConfigError
from livedenoise.evaluate.experiments import EXPERIMENTS, SCRATCH_METHODS

#: A fit's loss (:attr:`livedenoise.config.TrainingConfig.loss`).
Loss = Literal["l2", "l1"]


@dataclass
class EvalConfig:
    """Sizes, budgets and grids of the experiments. :func:`preset` gives ``tiny``/``quick``/``full``."""

    name: str = "quick"
    experiments: tuple[str, ...] = EXPERIMENTS
    image_size: int = 64
    structure: str = "filaments"
    camera: str = "andor-zyla-4.2"
    n_train: int = 4  # noisy frames per task for self-supervised fine-tuning
    n_test: int = 2  # held-out test fields per task
    peaks: tuple[float, ...] = (5.0, 50.0, 500.0)
    sweep_methods: tuple[str, ...] = ("noisy", "gaussian", "backbone", "transfer", "transfer-n2same", "scratch",
                                      "pairs")
    sweep_seeds: int = 1
    sweep_pairs: int = 5  # pairs for the "pairs" (supervised) method of the sweep
    stability_peak: float = 20.0
    stability_seeds: int = 5
    train_sizes: tuple[int, ...] = (1, 2, 5, 10)
    size_peak: float = 20.0
    size_seeds: int = 1
    loss_peaks: tuple[float, ...] = (5.0, 500.0)
    loss_seeds: int = 1
    pair_counts: tuple[int, ...] = (5, 10, 20)
    pairs_peak: float = 20.0
    pairs_seeds: int = 1
    averages: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    reference_average: int = 64
    background_fraction: float = 0.05  # uniform background, as a fraction of the peak
    # training (every fit; the papers' learning rates come from TrainingConfig). Validations every
    # 5 steps: the loop keeps weights only at a validation, so a fit that stops between two keeps
    # nothing it learnt since the last one.
    max_steps: int = 400
    patience: int = 8
    steps_per_validation: int = 5
    patch_size: int = 64
    batch_size: int = 4
    time_budget_s: float = 10.0
    # "scratch" fits: a network from random weights needs far more steps than a fine-tune and the
    # pretraining learning rate; it trains until early stopping or this budget. Its validations are
    # sparser: patience 8 x 5 steps would stop a random network on the first noisy plateau (measured:
    # 100-400 steps), which is not convergence; 8 x 20 steps without improvement is closer to it.
    scratch_max_steps: int = 5000
    scratch_time_budget_s: float = 60.0
    scratch_lr: float = 1e-3
    scratch_steps_per_validation: int = 20
    # real pairs
    real_max_pairs_per_set: int | None = 1
    real_crop: int | None = 128
    real_methods: tuple[str, ...] = ("noisy", "gaussian", "nlm", "backbone", "transfer", "transfer-n2same", "scratch",
                                     "pairs")
    real_max_train_pairs: int = 5
    seed: int = 0

    def training(self, loss: Loss = "l2", method: str = "transfer") -> TrainingConfig:
        """The :class:`TrainingConfig` of a fit: the papers' Noise2Self, except for ``transfer-n2same``.

        Scratch methods get their own step/time budget and the pretraining learning rate: with the
        fine-tuning rate (1e-4) and a fine-tune's budget a random network barely moves, and the
        comparison would measure the budget, not the value of pretraining.
        """
        extra: dict = {}
        if "self_supervised" in TrainingConfig.model_fields:
            extra["self_supervised"] = "noise2same" if method == "transfer-n2same" else "noise2self"
        max_steps, budget, every = self.max_steps, self.time_budget_s, self.steps_per_validation
        if method in SCRATCH_METHODS:
            max_steps, budget, every = (self.scratch_max_steps, self.scratch_time_budget_s,
                                        self.scratch_steps_per_validation)
            extra.update(lr_self_supervised=self.scratch_lr, lr_pairs=self.scratch_lr)
        return TrainingConfig(
            max_steps=max_steps, patience=self.patience, steps_per_validation=every,
            patch_size=max(16, min(self.patch_size, 1024)), batch_size=self.batch_size, loss=loss,
            time_budget_s=budget, seed=self.seed, **extra,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> EvalConfig:
        unknown = sorted(set(self.experiments) - set(EXPERIMENTS))
        if unknown:
            raise ConfigError(f"Unknown experiment(s) {', '.join(unknown)}; expected some of {', '.join(EXPERIMENTS)}.")
        if self.image_size < 16:
            raise ConfigError(f"image_size {self.image_size} is too small; expected at least 16 pixels.")
        for name in ("peaks", "loss_peaks"):
            if any(p <= 0 for p in getattr(self, name)):
                raise ConfigError(f"{name} {getattr(self, name)} must be positive photon counts.")
        if any(a < 1 for a in self.averages) or any(n < 1 for n in (*self.train_sizes, *self.pair_counts)):
            raise ConfigError("averages, train_sizes and pair_counts must be positive integers.")
        if (self.scratch_max_steps < 1 or self.scratch_time_budget_s <= 0 or self.scratch_lr <= 0
                or self.scratch_steps_per_validation < 1):
            raise ConfigError(f"scratch_max_steps ({self.scratch_max_steps}), scratch_time_budget_s "
                              f"({self.scratch_time_budget_s}) and scratch_lr ({self.scratch_lr}) must be positive.")
        return self


def preset(name: str) -> EvalConfig:
    """``tiny`` (test suite, seconds), ``quick`` (a few minutes on a 2-core CPU) or ``full`` (hours on a CPU)."""
    if name == "quick":
        return EvalConfig()  # the dataclass defaults
    if name == "tiny":
        return EvalConfig(
            name="tiny", image_size=32, n_train=2, n_test=1, peaks=(10.0, 200.0), sweep_seeds=1, sweep_pairs=2,
            stability_peak=10.0, stability_seeds=2, train_sizes=(1, 2), size_peak=10.0, loss_peaks=(10.0,),
            pair_counts=(2, 3), pairs_peak=10.0, averages=(1, 4), reference_average=8, max_steps=2,
            steps_per_validation=2, patience=2, patch_size=32, batch_size=2, time_budget_s=5.0,
            scratch_max_steps=4, scratch_time_budget_s=5.0, scratch_steps_per_validation=2,
            real_max_pairs_per_set=1, real_crop=48, real_max_train_pairs=2,
        )
    if name == "full":
        return EvalConfig(
            name="full", image_size=128, n_train=10, n_test=4, peaks=(5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0),
            sweep_seeds=5, sweep_pairs=5, stability_peak=20.0, stability_seeds=5, train_sizes=(1, 2, 5, 10, 20, 50),
            size_peak=20.0, size_seeds=3, loss_peaks=(5.0, 20.0, 100.0, 500.0), loss_seeds=3, pair_counts=(5, 10, 20),
            pairs_peak=20.0, pairs_seeds=3, max_steps=2000, patience=8, steps_per_validation=10, patch_size=64,
            batch_size=8, time_budget_s=60.0, scratch_max_steps=50_000, scratch_time_budget_s=900.0,
            scratch_steps_per_validation=50, real_max_pairs_per_set=None, real_crop=None, real_max_train_pairs=5,
        )
    raise ConfigError(f"Evaluation preset {name!r} is unknown; expected 'tiny', 'quick' or 'full'.")
