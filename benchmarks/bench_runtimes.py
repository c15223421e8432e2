"""Inference runtimes on the CPU, one run: PyTorch fp32 / bf16, ONNX Runtime and OpenVINO (fp32, bf16).

    python benchmarks/bench_runtimes.py                  # fast and standard, 512², 2 threads
    python benchmarks/bench_runtimes.py --models fast --threads 1

Every runtime runs the same network on the same normalised 512² input (a simulated frame), in the
same process, interleaved frame by frame, so that drifting load hits all alike; the table gives the
median milliseconds per frame and the largest difference from PyTorch fp32 as a fraction of its
output's range (the speed issue's equivalence criterion is 1e-3). The network is exported to ONNX
as ``livedenoise export`` does (``torch.onnx``, opset 17), without the noise model around it; each
runtime's output is copied before the next call reuses its buffers. OpenVINO is not a livedenoise dependency:
``pip install openvino`` to include it; a runtime that is not installed is listed as such.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, load_average, machine, machine_line, publish, table


def runners(model: str, threads: int, work: Path, x: np.ndarray) -> tuple[dict[str, Callable[[], np.ndarray]], dict]:
    """name -> a callable running one frame (returns the network output), and the runtimes not available."""
    import torch

    from livedenoise.inference import Denoiser

    den32 = Denoiser(model, device="cpu", precision="fp32")
    den16 = Denoiser(model, device="cpu", precision="bf16")
    xt = torch.from_numpy(x)
    out: dict[str, Callable[[], np.ndarray]] = {}
    missing: dict[str, str] = {}

    def torch_run(den: Denoiser) -> Callable[[], np.ndarray]:
        return lambda: den._call_model(den._engine, xt, None).numpy()

    out["pytorch fp32"] = torch_run(den32)
    out["pytorch bf16"] = torch_run(den16)
    onnx_path = work / f"{model}.onnx"
    net = Denoiser(model, device="cpu", channels_last=False).model.float().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (xt,), str(onnx_path), input_names=["x"], output_names=["y"], opset_version=17,
                          dynamo=False, dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}})
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        out["onnxruntime fp32"] = lambda: sess.run(None, {"x": x})[0]
    except ImportError:
        missing["onnxruntime"] = "not installed"
    try:
        import openvino as ov

        core = ov.Core()
        graph = core.read_model(str(onnx_path))
        for label, hint in (("openvino fp32", "f32"), ("openvino bf16", "bf16")):
            compiled = core.compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                         "PERFORMANCE_HINT": "LATENCY",
                                                         "INFERENCE_PRECISION_HINT": hint})
            request = compiled.create_infer_request()
            out[label] = (lambda r=request, c=compiled: r.infer({0: x})[c.output(0)])
    except ImportError:
        missing["openvino"] = "not installed (pip install openvino)"
    return out, missing


def main(argv: list[str] | None = None) -> int:
    import torch

    from livedenoise.device import configure_cpu_threads
    from livedenoise.evaluate import SimulatedTask, with_normalizer
    from livedenoise.modelspec import load_model_spec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="fast,standard")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    configure_cpu_threads(args.threads)
    load_start = load_average()
    frame = SimulatedTask("filaments", args.size).test_set(20.0, 1, 1)[0][0]
    results: dict[str, dict] = {}
    missing: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            norm = with_normalizer(load_model_spec(model), [frame]).normalizer
            x = norm.forward(frame)[None, None].astype(np.float32)
            run, miss = runners(model, args.threads, Path(tmp), x)
            missing.update(miss)
            ref = np.array(run["pytorch fp32"](), np.float32, copy=True)
            span = float(ref.max() - ref.min()) or 1.0
            diffs = {}
            for name, f in run.items():
                y = np.array(f(), np.float32, copy=True)  # runtimes may hand out a view of a buffer they reuse
                f()
                diffs[name] = float(np.abs(y - ref).max()) / span
            times: dict[str, list[float]] = {n: [] for n in run}
            for _ in range(args.repeats):
                for name, f in run.items():
                    t0 = time.perf_counter()
                    f()
                    times[name].append(1000 * (time.perf_counter() - t0))
            results[model] = {n: {"ms": float(np.median(times[n])), "max_diff_of_range": diffs[n]} for n in run}
            print(f"[runtimes] {model}: " + ", ".join(f"{n} {v['ms']:.0f} ms" for n, v in results[model].items()),
                  flush=True)
    info = {**machine(), "load_average_start": load_start, "threads": torch.get_num_threads()}
    payload = {"machine": info, "size": args.size, "results": results, "missing": missing,
               "command": f"python benchmarks/bench_runtimes.py --models {args.models} --threads {args.threads}"}
    md = "\n".join([f"# Inference runtimes, {args.size}² frame", "", f"- machine: {machine_line(info)}", "",
                    runtimes_table(payload)])
    publish(args.output, "runtimes", payload, md)
    return 0


def runtimes_table(payload: dict) -> str:
    """ms per frame per model and runtime, the speed-up over PyTorch fp32 and the difference from it."""
    body = []
    for model, res in payload["results"].items():
        base = res["pytorch fp32"]["ms"]
        for name, v in res.items():
            body.append([model, name, f"{v['ms']:.0f}", f"{base / v['ms']:.2f}x", f"{v['max_diff_of_range']:.1e}"])
    lines = [table(["model", "runtime", f"ms / {payload['size']}² frame", "vs PyTorch fp32", "max |Δ| / range"], body)]
    lines += [f"Not run: {k}: {v}" for k, v in (payload.get("missing") or {}).items()]
    return "\n\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
