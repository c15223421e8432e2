"""Run an example's acquisition with livedenoise's raw | denoised viewer open (examples only).

The viewer's ``post_frames`` may be called from any thread, so a display callback can feed it directly;
the acquisition runs in a background thread while Qt's event loop runs in the main thread, the way
napari-micromanager runs an MDA next to its window.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livedenoise.acquisition.display import DenoisedFrame


def run_with_viewer(job: Callable[[Callable[[DenoisedFrame], None]], Any], *, title: str,
                    screenshot: Path | None = None) -> tuple[Any, int]:
    """``job(show)`` runs in a thread; ``show(frame)`` posts each displayed frame. Returns (result, frames shown)."""
    from PySide6.QtCore import QTimer

    from livedenoise.viewer import LiveViewer, create_app

    app = create_app()
    viewer = LiveViewer(title=title)
    result: dict[str, Any] = {}

    def show(frame: DenoisedFrame) -> None:
        if frame.raw is not None:
            viewer.post_frames(frame.raw, frame.denoised)

    def work() -> None:
        try:
            result["value"] = job(show)
        except BaseException as exc:  # re-raised in the main thread
            result["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    viewer.show()
    worker.start()
    timer = QTimer()
    timer.timeout.connect(lambda: (not worker.is_alive()) and app.quit())
    timer.start(100)
    app.exec()
    timer.stop()
    worker.join()
    viewer.render_once()
    shown = viewer.display_count
    if screenshot is not None:
        viewer.save_screenshot(screenshot)
    viewer.close()
    if "error" in result:
        raise result["error"]
    return result["value"], shown


def run_example(acquire: Callable[[Callable[[DenoisedFrame], None]], Any], scores: Callable[[DenoisedFrame], None], *,
                show: bool, title: str, screenshot: Path | None = None) -> Any:
    """``acquire(display)`` with ``scores`` as its display callback, and with the viewer fed too when ``show``."""
    if not show:
        return acquire(scores)

    def job(post: Callable[[DenoisedFrame], None]) -> Any:
        def display(frame: DenoisedFrame) -> None:
            scores(frame)
            post(frame)

        return acquire(display)

    result, shown = run_with_viewer(job, title=title, screenshot=screenshot)
    print(f"viewer: {shown} raw | denoised frames shown")
    return result
