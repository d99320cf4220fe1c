from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from targets.latency import LatencyResult, cuda_sync_for, measure_latencies, measure_latency, summarize, time_calls


def test_summary_percentiles_are_numpys():
    values = np.random.default_rng(0).exponential(size=37).tolist()
    r = summarize(values)
    assert r.median_ms == pytest.approx(np.median(values)) and r.p90_ms == pytest.approx(np.percentile(values, 90))


def test_measure_latencies_interleaves_rounds():
    events = []
    calls = {"a": (lambda: events.append("a"), ()), "b": (lambda x: events.append(x), ("b",))}
    results = measure_latencies(calls, warmup=1, runs=4, rounds=2, items_per_call={"b": 8})
    assert events == ["a", "b"] + ["a", "a", "b", "b"] * 2  # warm-up each, then 2 rounds of 2 runs each
    assert results["a"].runs == 4 and results["b"].runs == 4 and results["a"].warmup == 1
    assert results["b"].fps == pytest.approx(8 * 1000 / results["b"].median_ms)


def test_summarize_statistics_and_fps():
    r = summarize([4.0, 1.0, 2.0, 3.0, 10.0], warmup=7, items_per_call=8)
    assert isinstance(r, LatencyResult)
    assert r.median_ms == 3.0
    assert r.p90_ms == pytest.approx(np.percentile([1, 2, 3, 4, 10], 90))
    assert r.mean_ms == 4.0 and r.min_ms == 1.0 and r.max_ms == 10.0
    assert r.runs == 5 and r.warmup == 7
    assert r.fps == pytest.approx(8 * 1000 / 3.0)  # images per second, batch of 8 per call
    assert set(r.to_dict()) >= {"median_ms", "p90_ms", "mean_ms", "fps", "runs", "warmup"}


def test_measure_latency_counts_calls_and_measures_sleep():
    calls = []

    def fn(x):
        calls.append(x)
        time.sleep(0.002)

    r = measure_latency(fn, warmup=3, runs=10, args=(5,))
    assert len(calls) == 13 and all(c == 5 for c in calls)
    assert r.runs == 10 and r.warmup == 3
    # sleep(2 ms) never returns early; it can overrun on a loaded machine, so only a loose upper bound.
    assert 2.0 <= r.min_ms <= r.median_ms <= r.p90_ms <= r.max_ms < 200
    assert r.fps == pytest.approx(1000 / r.median_ms)


def test_sync_is_called_after_every_timed_call():
    events = []
    measure_latency(lambda: events.append("call"), warmup=2, runs=3, sync=lambda: events.append("sync"))
    # warm-up calls, one sync before the clock starts, then call + sync per timed run
    assert events == ["call", "call", "sync", "call", "sync", "call", "sync", "call", "sync"]


def test_time_calls_returns_one_time_per_run():
    assert len(time_calls(lambda: None, 7)) == 7


def test_invalid_arguments():
    with pytest.raises(ValueError):
        measure_latency(lambda: None, warmup=0, runs=0)
    with pytest.raises(ValueError):
        measure_latency(lambda: None, warmup=-1, runs=1)
    with pytest.raises(ValueError):
        summarize([])


def test_cuda_sync_only_for_cuda_objects():
    assert cuda_sync_for(torch.nn.Linear(2, 2)) is None
    assert cuda_sync_for(lambda: None) is None

    class TorchOnCuda:
        name = "torch"
        device = "cuda:0"

    class OrtOnCuda:  # ONNX Runtime returns host arrays: nothing to synchronise
        name = "onnxruntime"
        device = "cuda"

    assert cuda_sync_for(TorchOnCuda()) is torch.cuda.synchronize
    assert cuda_sync_for(OrtOnCuda()) is None
