"""Run a peer tool on images, inside the peers environment (``benchmarks/setup_peers.sh``).

Called by ``bench_quality.py`` as a subprocess: ``python peers_worker.py IN.npz OUT.npz``. The input
holds ``img_<i>`` float32 arrays and a JSON ``spec``; the output holds ``out_<i>`` arrays, the wall
seconds per image (``seconds``) and a JSON ``info``. Metrics are never computed here: the benchmark
scores every method with the same ``livedenoise.metrics`` code in its own process.

Methods:
* ``bm3d``: ``bm3d.bm3d(z, sigma_psd)`` on images already variance-stabilised by the caller
  (generalised Anscombe transform, noise std 1).
* ``bm4d``: ``bm4d.bm4d(z, sigma_psd)`` on 3-D stacks (a time-lapse with T as the third axis), already
  variance-stabilised by the caller.
* ``n2v``: CAREamics Noise2Void (``create_n2v_config`` + ``CAREamist.train`` + ``predict``), one model
  per group of images (``groups``: lists of indices trained together), stopped by Lightning's
  ``Timer`` after ``time_budget_s`` so that it gets the same budget as livedenoise's fine-tuning.
  With ``converge`` it trains until its validation loss has not improved for ``patience`` epochs
  (Lightning's ``EarlyStopping``), ``time_budget_s`` only capping it, and predicts with the weights of
  the best validation loss; the info says, per group, the epochs run, the best epoch and why it stopped.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np


def run_block_matching(images: list[np.ndarray], spec: dict) -> tuple[list[np.ndarray], list[float], dict]:
    """``bm3d`` (2-D images) or ``bm4d`` (3-D stacks) with ``sigma_psd`` on already stabilised inputs."""
    import importlib

    name = spec["method"]
    module = importlib.import_module(name)
    run = getattr(module, name)
    outs, secs = [], []
    for img in images:
        t0 = time.perf_counter()
        outs.append(np.asarray(run(img.astype(np.float64), sigma_psd=float(spec.get("sigma", 1.0))), np.float32))
        secs.append(time.perf_counter() - t0)
    return outs, secs, {name: getattr(module, "__version__", "?")}


def _patch(shape: tuple[int, ...], wanted: int) -> int:
    """Largest power of two <= ``wanted`` and <= half the image side (so validation patches exist), >= 16."""
    side = min(wanted, min(shape[-2:]) // 2)
    return max(16, 2 ** int(np.floor(np.log2(max(side, 1)))))


def _best_weights_callback():
    """A Lightning callback that keeps (in memory) the module's weights at its lowest ``val_loss``."""
    from lightning.pytorch.callbacks import Callback

    class BestWeights(Callback):
        def __init__(self) -> None:
            self.best = float("inf")
            self.best_epoch = -1
            self.state: dict | None = None

        def on_validation_end(self, trainer, module) -> None:
            loss = trainer.callback_metrics.get("val_loss")
            if loss is None or trainer.sanity_checking:
                return
            value = float(loss)
            if value < self.best:
                self.best, self.best_epoch = value, int(trainer.current_epoch)
                self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    return BestWeights()


def run_n2v(images: list[np.ndarray], spec: dict) -> tuple[list[np.ndarray], list[float], dict]:
    import datetime as dt
    import logging

    import careamics
    import torch
    from careamics import CAREamist
    from careamics.config import create_n2v_config
    from lightning.pytorch.callbacks import Timer

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.manual_seed(int(spec.get("seed", 0)))
    budget = float(spec.get("time_budget_s", 60.0))
    groups = spec.get("groups") or [[i] for i in range(len(images))]
    outs: list[np.ndarray | None] = [None] * len(images)
    secs = [0.0] * len(images)
    epochs_done = []
    converge = bool(spec.get("converge", False))
    fits: list[dict] = []
    for g, idx in enumerate(groups):
        shapes = {images[i].shape for i in idx}
        if len(shapes) != 1:
            raise ValueError(f"group {g}: images of different shapes {shapes} cannot be stacked for N2V")
        stack = np.stack([images[i] for i in idx]).astype(np.float32)
        patch = _patch(stack.shape, int(spec.get("patch_size", 64)))
        available = stack.shape[0] * (stack.shape[-2] // patch) * (stack.shape[-1] // patch)
        n_val = max(1, min(8, available // 4))  # CAREamics takes these from the training patches
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            cfg = create_n2v_config(
                experiment_name=f"bench{g}", data_type="array", axes="SYX", patch_size=[patch, patch],
                batch_size=int(spec.get("batch_size", 16)), num_epochs=int(spec.get("max_epochs", 10_000)),
                n_val_patches=n_val,
            )
            timer = Timer(duration=dt.timedelta(seconds=budget), interval="step")
            callbacks: list = [timer]
            if converge:  # CAREamics builds EarlyStopping itself, from its configuration
                cfg.training_config.early_stopping_params = {
                    "monitor": "val_loss", "mode": "min", "patience": int(spec.get("patience", 200))}
                best = _best_weights_callback()
                callbacks.append(best)
            model = CAREamist(cfg, work_dir=work, callbacks=callbacks, enable_progress_bar=False)
            model.train(train_data=stack)
            epochs = int(getattr(model.trainer, "current_epoch", -1))
            epochs_done.append(epochs)
            if converge:
                if best.state is not None:
                    model.model.load_state_dict(best.state)
                stopper = model.trainer.early_stopping_callback
                if stopper is None:
                    raise RuntimeError("CAREamics did not install the EarlyStopping callback it was configured with")
                stopped = "early_stop" if stopper.stopped_epoch > 0 else "time_budget"
                fits.append({"epochs": epochs, "best_epoch": best.best_epoch, "stopped": stopped,
                             "best_val_loss": best.best, "seconds": round(time.perf_counter() - t0, 1)})
            for i in idx:
                pred = model.predict(images[i].astype(np.float32), axes="YX")
                arr = np.asarray(pred[0] if isinstance(pred, (list, tuple)) else pred, np.float32)
                outs[i] = arr.reshape(images[i].shape)
        per = (time.perf_counter() - t0) / len(idx)
        for i in idx:
            secs[i] = per
    info = {"careamics": careamics.__version__, "epochs": epochs_done, "time_budget_s": budget}
    if converge:
        info.update(converge=True, patience=int(spec.get("patience", 200)), fits=fits)
    return list(outs), secs, info


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: peers_worker.py IN.npz OUT.npz", file=sys.stderr)
        return 2
    torch_threads = os.environ.get("PEERS_TORCH_THREADS")
    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
    with np.load(argv[1]) as data:
        spec = json.loads(str(data["spec"]))
        images = [data[f"img_{i}"] for i in range(int(spec["count"]))]
    method = spec["method"]
    if method in ("bm3d", "bm4d"):
        outs, secs, info = run_block_matching(images, spec)
    elif method == "n2v":
        outs, secs, info = run_n2v(images, spec)
    else:
        print(f"unknown method {method!r}", file=sys.stderr)
        return 2
    np.savez(argv[2], seconds=np.asarray(secs), info=json.dumps(info), **{f"out_{i}": o for i, o in enumerate(outs)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
