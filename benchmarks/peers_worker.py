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
* ``deepcad``: DeepCAD-RT (PyPI ``deepcad`` 1.2.0; 1.3.0 on PyPI ships no code) trained from scratch on each
  3-D stack ``[T, H, W]`` (the image itself: interleaved frames as input and target), then applied to it. The
  package's network (``Network_3D_Unet``), training samples (``trainset``: odd/even frames of a 3-D patch,
  random swap, rotation and flip), tiling and stitching at prediction (``test_preprocess_chooseOne``,
  ``testset``, ``singlebatch_test_save``, and its intensity correction of each tile) are used as they are; the
  training loop is written here because ``training_class.train`` moves every batch to CUDA unconditionally
  (``input.cuda()``: "Torch not compiled with CUDA enabled" on the CPU build) and has no time budget. It is the
  package's loop otherwise: Adam (``lr``, betas 0.5/0.999), loss 0.5 L1 + 0.5 L2, batch 1, the stack minus its
  mean. It trains for ``time_budget_s`` seconds (the last iteration may overrun it) and the info says what ran.
  The training patches: a grid with ``overlap`` in x/y and, in t, every window of ``2 * patch_t`` frames with a
  step of ``patch_t`` (the package's own grid divides by zero when ``T == 2 * patch_t``); ``patch_t`` must be a
  multiple of 8 (three 2x poolings) and at most ``T // 2``.
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


def _deepcad_train_coordinates(shape: tuple[int, ...], patch_xy: int, patch_t: int, gap_xy: int) -> dict:
    """Training patches of ``2 * patch_t`` frames, as the coordinate dicts ``deepcad.data_process.trainset`` reads."""
    t, h, w = shape

    def starts(size: int, patch: int, gap: int) -> list[int]:
        last = size - patch
        return sorted({*range(0, last + 1, max(gap, 1)), last})

    coords = {}
    for s0 in starts(t, 2 * patch_t, patch_t):
        for y0 in starts(h, patch_xy, gap_xy):
            for x0 in starts(w, patch_xy, gap_xy):
                coords[f"t{s0}_y{y0}_x{x0}"] = {"init_s": s0, "end_s": s0 + 2 * patch_t, "init_h": y0,
                                                "end_h": y0 + patch_xy, "init_w": x0, "end_w": x0 + patch_xy}
    return coords


def run_deepcad(images: list[np.ndarray], spec: dict) -> tuple[list[np.ndarray], list[float], dict]:
    import importlib.metadata
    import random

    import tifffile
    import torch
    from deepcad.data_process import singlebatch_test_save, test_preprocess_chooseOne, testset, trainset
    from deepcad.network import Network_3D_Unet
    from deepcad.test_collection import testing_class
    from torch.utils.data import DataLoader

    budget = float(spec.get("time_budget_s", 180.0))
    patch_t = int(spec.get("patch_t", 8))
    overlap = float(spec.get("overlap", 0.5))
    lr, fmap, seed = float(spec.get("lr", 5e-5)), int(spec.get("fmap", 16)), int(spec.get("seed", 0))
    outs, secs, fits = [], [], []
    for stack in images:
        if stack.ndim != 3:
            raise ValueError(f"deepcad wants [T, H, W] stacks, got shape {stack.shape}")
        if patch_t % 8 or 2 * patch_t > stack.shape[0]:
            raise ValueError(f"patch_t {patch_t}: must be a multiple of 8 and <= T/2 (T = {stack.shape[0]})")
        patch_xy = min(int(spec.get("patch_xy", 64)), *stack.shape[1:])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            # the package's own preprocessing for prediction reads a folder of TIFFs
            tifffile.imwrite(os.path.join(work, "stack.tif"), stack.astype(np.float32))
            cfg = testing_class({"datasets_path": work, "patch_x": patch_xy, "patch_y": patch_xy, "patch_t": patch_t,
                                 "overlap_factor": overlap, "test_datasize": stack.shape[0], "fmap": fmap})
            cfg.datasets_name, cfg.print_img_name = "stack", False
            coords = _deepcad_train_coordinates(stack.shape, patch_xy, patch_t, cfg.gap_x)
            centred = stack.astype(np.float32) - float(stack.astype(np.float32).mean())
            train = trainset(list(coords), coords, [centred], [0] * len(coords))
            model = Network_3D_Unet(in_channels=1, out_channels=1, f_maps=fmap, final_sigmoid=True)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
            l1, l2 = torch.nn.L1Loss(), torch.nn.MSELoss()
            iterations, epochs, losses, first_epoch_loss = 0, 0, [], None
            model.train()
            while time.perf_counter() - t0 < budget:
                losses = []
                for inp, target in DataLoader(train, batch_size=1, shuffle=True, num_workers=0):
                    pred = model(inp)
                    loss = 0.5 * l1(pred, target) + 0.5 * l2(pred, target)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss))
                    iterations += 1
                    if time.perf_counter() - t0 >= budget:
                        break
                epochs += 1
                if first_epoch_loss is None:
                    first_epoch_loss = float(np.mean(losses))
            train_s = time.perf_counter() - t0
            # prediction: the package's tiling of overlapping windows of patch_t consecutive frames, each tile's
            # centre kept and scaled by sqrt(sum(raw tile) / sum(output tile)) as its testing_class does
            names, noisy, tiles, _, mean, _ = test_preprocess_chooseOne(cfg, img_id=0)
            out = np.zeros(noisy.shape, np.float64)
            model.eval()
            t1 = time.perf_counter()
            with torch.no_grad():
                for patch, coord in DataLoader(testset(names, tiles, noisy), batch_size=1, shuffle=False):
                    res = np.squeeze(model(patch).numpy())
                    o, r, sw, ew, sh, eh, ss, es = singlebatch_test_save(coord, res, np.squeeze(patch.numpy()))
                    o, r = o + mean, r + mean
                    out[ss:es, sh:eh, sw:ew] = o * (np.sum(r) / np.sum(o)) ** 0.5
            predict_s = time.perf_counter() - t1
        outs.append(out.astype(np.float32))
        secs.append(time.perf_counter() - t0)
        fits.append({"iterations": iterations, "epochs_started": epochs, "patches_per_epoch": len(coords),
                     "train_seconds": round(train_s, 1), "predict_seconds": round(predict_s, 2),
                     "first_epoch_loss": first_epoch_loss,
                     "last_epoch_loss": float(np.mean(losses)) if losses else None, "tiles": len(names)})
    info = {"deepcad": importlib.metadata.version("deepcad"), "time_budget_s": budget, "patch_xy": patch_xy,
            "patch_t": patch_t, "train_window_frames": 2 * patch_t, "overlap": overlap, "lr": lr, "fmap": fmap,
            "batch_size": 1, "seed": seed, "torch_threads": torch.get_num_threads(), "fits": fits}
    return outs, secs, info


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
    elif method == "deepcad":
        outs, secs, info = run_deepcad(images, spec)
    else:
        print(f"unknown method {method!r}", file=sys.stderr)
        return 2
    np.savez(argv[2], seconds=np.asarray(secs), info=json.dumps(info), **{f"out_{i}": o for i, o in enumerate(outs)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
