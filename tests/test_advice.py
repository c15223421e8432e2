"""The end-of-session advice: why the display fell behind and what would help in this session."""
from __future__ import annotations

from livedenoise.acquisition.advice import RECORDER_TAIL_S, SessionFacts, keep_up_advice
from livedenoise.commands.demo import summary_lines

TEMPORAL_CPU = SessionFacts(backbone="backbone-temporal", temporal=True, second_pass=True, one_pass=False,
                            precision="fp32", device="cpu", bf16_units=True)


def _phase(camera: float, shown: float, frames: int = 100, latency: float | None = 250.0) -> dict:
    return {"frames_acquired": frames, "camera_fps": camera, "denoised_fps": shown, "mean_latency_ms": latency}


def test_a_display_that_keeps_up_and_a_prompt_recorder_get_no_advice() -> None:
    phases = {"while fine-tuning": _phase(10.0, 6.0), "after fine-tuning": _phase(10.0, 9.5)}
    assert keep_up_advice(phases, TEMPORAL_CPU, recorder_tail_s=RECORDER_TAIL_S - 1) == []


def test_a_slow_display_is_told_every_option_that_applies_to_its_session() -> None:
    phases = {"while fine-tuning": _phase(10.0, 4.2), "after fine-tuning": _phase(10.0, 4.3, latency=271.4)}
    (line,) = keep_up_advice(phases, TEMPORAL_CPU, frame=(512, 512))
    assert line.startswith("the display showed 4.3 of 10.0 frames/s after fine-tuning (mean latency 271 ms): "
                           "denoising a 512x512 frame took longer than the 100 ms between camera frames")
    options = line.split("To keep up, try: ", 1)[1].split("; ")
    assert [o.split(" (")[0] for o in options] == [
        "--precision bf16", "--backbone temporal-lite", "--one-pass auto", "--no-second-pass",
        "a smaller field of view or a slower camera"]


def test_only_the_options_that_exist_are_named() -> None:
    phases = {"without fine-tuning": _phase(20.0, 12.0)}
    gpu_fast = SessionFacts(backbone="backbone-fast", temporal=False, second_pass=True, one_pass=False,
                            precision="fp16", device="cuda", bf16_units=True)
    (line,) = keep_up_advice(phases, gpu_fast)
    assert "--backbone lite" in line and "--precision" not in line and "--one-pass" not in line \
        and "--no-second-pass" not in line
    custom = SessionFacts(backbone="my-model", temporal=False, second_pass=True, one_pass=False, precision="bf16",
                          device="cpu", bf16_units=True)
    (line,) = keep_up_advice(phases, custom)
    assert "--backbone" not in line and "--precision" not in line and "denoising a frame took longer" in line
    no_amx = SessionFacts(backbone="backbone-temporal", temporal=True, second_pass=False, one_pass=False,
                          precision="fp32", device="cpu", bf16_units=False)
    (line,) = keep_up_advice(phases, no_amx)  # the fusion alone costs what one pass costs: nothing to gain there
    assert "--precision" not in line and "--one-pass" not in line and "--no-second-pass" not in line \
        and "--backbone temporal-lite" in line
    in_one_pass = SessionFacts(backbone="backbone-temporal", temporal=True, second_pass=True, one_pass=True,
                               precision="bf16", device="cpu", bf16_units=True)
    (line,) = keep_up_advice(phases, in_one_pass)  # its recorder still runs the second pass
    assert "--one-pass" not in line and "--no-second-pass" in line and "--backbone temporal-lite" in line
    auto = SessionFacts(backbone="backbone-temporal", temporal=True, second_pass=True, one_pass="auto",
                        precision="bf16", device="cpu", bf16_units=True)
    (line,) = keep_up_advice(phases, auto)  # the default: the display already goes to one pass when behind
    assert "--one-pass" not in line and "--no-second-pass" in line and "--backbone temporal-lite" in line


def test_the_phase_without_a_fine_tune_beside_it_is_judged_when_it_has_enough_frames() -> None:
    # after the fine-tune: too few frames to judge, so the display while it ran is judged (and it kept up)
    phases = {"while fine-tuning": _phase(10.0, 9.6), "after fine-tuning": _phase(10.0, 2.0, frames=5)}
    assert keep_up_advice(phases, TEMPORAL_CPU) == []
    phases["while fine-tuning"] = _phase(10.0, 5.0)
    assert "while fine-tuning" in keep_up_advice(phases, TEMPORAL_CPU)[0]
    assert keep_up_advice({}, TEMPORAL_CPU) == []


def test_a_recorder_that_finished_long_after_the_camera_is_explained() -> None:
    (line,) = keep_up_advice({}, TEMPORAL_CPU, recorder_tail_s=143.3)
    assert line.startswith("the denoised recording finished 143 s after the camera stopped")
    assert "save_denoised = false" in line and "with the same windows" in line


def test_the_demo_prints_the_advice_last() -> None:
    report = {"quality": {"frames": 8, "raw": {"psnr": 21.0, "ssim": 0.5}, "backbone": {"psnr": 26.0, "ssim": 0.6}},
              "finetune": {"steps": 5, "elapsed_s": 1.0, "stopped": "time_budget", "best_step": 5},
              "swapped_at_frame": None, "frames_acquired": 50, "advice": ["first sentence.", "second sentence."]}
    lines = summary_lines(report)
    assert lines[-2:] == ["advice: first sentence.", "advice: second sentence."]


def test_the_printed_report_keeps_config_keys_in_brackets_as_text() -> None:
    """Advice names keys like "[live] interval_ms"; rich must print them, not take them for markup."""
    from rich.console import Console

    from livedenoise.acquisition.session import SessionReport
    from livedenoise.commands.demo import print_report

    line = keep_up_advice({"without fine-tuning": _phase(10.0, 4.0)}, TEMPORAL_CPU, recorder_tail_s=127.0)
    rep = SessionReport(mode="pairs", backend="test", advice=line, errors=["model [bad] failed"],
                        paths={"raw": "runs/[x]/raw_1"})
    console = Console(record=True, width=400)
    print_report(console, rep)
    text = console.export_text()
    assert "a slower camera ([live] interval_ms)." in text and "[live] save_denoised = false" in text
    assert "model [bad] failed" in text and "raw runs/[x]/raw_1" in text
