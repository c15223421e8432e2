"""Work of a live session that can wait yields the CPU to the work that cannot.

On a 2-core computer the camera's acquisition, the display's denoising and the recording of every denoised frame
compete for the cores. The display must keep up with the camera (the user is looking at it); the recording
need not: it queues frames, re-reads spilled ones from the raw dataset and catches up when the acquisition ends
(:class:`~livedenoise.acquisition.recorder.DenoisedWriter`). So the recorder's thread runs at a lower scheduling
priority: when the cores are free it runs as fast as before, and when they are not, the display gets them first.
Measured with ``livedenoise demo`` at 512² and 20 frames/s (README, "What livedenoise guarantees").
"""
from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger("livedenoise")

#: How much nicer (Linux ``nice`` steps, 0..19) a background thread makes itself: at 10, the kernel gives a busy
#: normal-priority thread about nine times its share of a contended core.
BACKGROUND_NICENESS = 10


def lower_this_thread_priority(what: str) -> bool:
    """Make the calling thread (and the threads it starts later) yield the CPU to normal-priority threads.

    Linux only, where each thread has its own niceness; raising one's niceness needs no privileges. Elsewhere
    nothing changes. ``what`` names the thread in the log. True where the priority was lowered."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICENESS)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (AttributeError, OSError) as exc:  # a sandbox that forbids it: run at the normal priority
        log.debug("%s keeps its priority (%s)", what, exc)
        return False
    log.debug("%s runs at nice %d (the display and the acquisition come first)", what, nice)
    return True
