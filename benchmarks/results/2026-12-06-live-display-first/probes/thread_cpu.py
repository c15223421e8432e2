"""Per-thread CPU seconds of a `livedenoise demo` session, sampled every second from /proc (a probe).

    PROBE_OUT=thread-cpu.json python thread_cpu.py demo --config ... --backbone lite ...

Writes {"t0", "samples": [{"t", "threads": {tid: [thread name, cpu seconds]}}]} and prints how often the display and
the recorder pushed frames and how many of the recorder's 2-D passes were shared ("PUSH ...").
"""
import json
import os
import sys
import threading
import time

import livedenoise.inference as inference
from livedenoise.cli import main

TICK = os.sysconf("SC_CLK_TCK")
samples: list[dict] = []
stop = threading.Event()
pushes: dict[str, int] = {}
_push = inference.Denoiser.push


def counting_push(self, frame, stream="live", **kw):
    out = _push(self, frame, stream, **kw)
    pushes["second_pass_shared"], pushes["2d_shared"] = self.shared_output_hits, self.shared_hits
    pushes[stream] = pushes.get(stream, 0) + 1
    return out


def sample() -> None:
    while not stop.is_set():
        names = {t.native_id: t.name for t in threading.enumerate()}
        row: dict = {"t": time.perf_counter(), "threads": {}}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    stat = f.read()
                with open(f"/proc/self/task/{tid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            row["threads"][tid] = (names.get(int(tid), comm), (int(fields[11]) + int(fields[12])) / TICK)
        samples.append(row)
        stop.wait(1.0)


if __name__ == "__main__":
    inference.Denoiser.push = counting_push
    sampler = threading.Thread(target=sample, daemon=True, name="probe-sampler")
    sampler.start()
    t0 = time.perf_counter()
    try:
        main(sys.argv[1:])
    finally:
        stop.set()
        sampler.join()
        print("PUSH", pushes)
        with open(os.environ.get("PROBE_OUT", "thread-cpu.json"), "w") as f:
            json.dump({"t0": t0, "samples": samples}, f)
