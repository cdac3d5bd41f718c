"""sam2plus.heap: the encoder's freed memory goes back to the system once the worker is idle, or
before an encode on another thread, never between a background encode and the next click.

The unit tests count the trims of a `HeapTrim` whose trim is a counter; the slow one runs the
real SAM2 (untrained, CPU, its default OpenVINO encoder) and counts the page faults of a click
after a background encode, against the same click after an immediate trim (the behaviour this
module replaced).
"""

from __future__ import annotations

import resource
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sam2plus.heap import HeapTrim, release_free_memory
from sam2plus.segmenter import PatchPrompt, Segmenter

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"
POINT = PatchPrompt(np.array([[512.0, 512.0]]), np.array([1]), None)


def _trim_counting(idle_s: float) -> tuple[HeapTrim, list]:
    calls = []
    return HeapTrim(idle_s, trim=lambda: calls.append(time.monotonic())), calls


def _within(seconds: float, condition) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _on_thread(fn) -> None:
    """`fn` run on a thread of its own (another request's)."""
    thread = threading.Thread(target=fn)
    thread.start()
    thread.join()


def _encode(heap: HeapTrim, seconds: float = 0.0) -> None:
    """An encoder run of `seconds` on this thread."""
    with heap.encoding():
        time.sleep(seconds)


def test_freed_memory_goes_back_once_the_worker_is_idle():
    heap, calls = _trim_counting(0.3)
    encoded = time.monotonic()  # at most the encode's end, from which the idle time counts
    _encode(heap)
    assert not calls, "not at once"
    assert _within(5, lambda: calls), "handed back once idle"
    assert calls[0] - encoded >= 0.3 and heap.trims == 1
    time.sleep(0.5)
    assert heap.trims == 1, "once per encode, not again while idle"


def test_clicks_hold_the_trim_back_until_they_stop():
    heap, calls = _trim_counting(0.3)
    _encode(heap)
    for _ in range(12):  # a click every 0.1 s for 1.2 s
        time.sleep(0.1)
        stopped = time.monotonic()
        heap.touch()
    assert not calls, "never while clicks come"
    assert _within(5, lambda: calls)
    assert calls[0] - stopped >= 0.3


def test_no_idle_trim_while_an_encode_runs():
    heap, calls = _trim_counting(0.1)
    _encode(heap)
    _encode(heap, 0.6)  # longer than idle_s, without a click
    assert not calls, "not during the run"
    assert _within(5, lambda: calls)


def test_an_encode_on_the_same_thread_reuses_its_freed_memory_and_another_thread_trims_first():
    heap, calls = _trim_counting(3600)
    _on_thread(lambda: _encode(heap))
    assert heap.trims == 0, "the first encode: nothing freed yet"
    _encode(heap)
    assert heap.trims == 1, "another thread's encode: the last run's memory goes back first"
    _encode(heap)
    _encode(heap)
    assert heap.trims == 1, "the same thread reuses its heap"


def test_an_encode_that_fails_still_frees_its_memory_and_lets_the_idle_trim_run():
    heap, calls = _trim_counting(0.1)
    with pytest.raises(RuntimeError), heap.encoding():
        raise RuntimeError("the encoder failed")
    assert _within(5, lambda: calls)


def test_nothing_to_hand_back_without_an_encode():
    heap, calls = _trim_counting(0.05)
    heap.touch()
    time.sleep(0.3)
    assert not calls


@pytest.mark.slow
def test_a_click_after_a_background_encode_finds_its_pages_in_place(tmp_path):
    segmenter = Segmenter(TINY, None, "cpu", 256 << 20, "openvino", "auto", tmp_path / "encoders")  # a CPU's default
    segmenter.heap = HeapTrim(idle_s=3600)
    rng = np.random.default_rng(0)
    patches = [rng.integers(0, 255, (1024, 1024, 3), np.uint8) for _ in range(7)]
    background = ThreadPoolExecutor(1)  # as the warm-up thread: one thread for every prefetch

    def background_encode(index: int, trim: bool) -> None:
        def run():
            segmenter.embed(patches[index], ("p", index))
            if trim:
                release_free_memory()

        background.submit(run).result()

    def click_faults(index: int) -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        segmenter.predict(patches[index], ("p", index), POINT)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    background_encode(0, trim=False)
    for _ in range(3):  # the clicking thread's decoder calls settle
        click_faults(0)
    faults = {True: [], False: []}
    for index in range(1, 7):  # glibc also trims a little by itself now and then: medians of 3
        trim = index % 2 == 1
        background_encode(index, trim)
        faults[trim].append(click_faults(index))
        click_faults(index), click_faults(index)  # more clicks on the task: the heap settles again
    background.shutdown()
    kept, trimmed = statistics.median(faults[False]), statistics.median(faults[True])
    assert segmenter.heap.trims == 0, "no trim between the background encodes and the clicks"
    assert kept * 3 < trimmed, f"page faults of a click: {faults[False]} kept, {faults[True]} after a trim"
