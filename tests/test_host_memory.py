"""crl_jax.host.memory.tune_malloc: freed large buffers are reused instead of mapped (and
page-faulted) afresh, for plain malloc and for XLA's per-step temporaries;
crl_jax.host.memory.set_cpu_dispatch: run inline, a step's temporaries above a thread arena's
64 MiB heap are reused too.

Each check runs in a subprocess: the thresholds are process-wide and the baseline needs a
process with glibc's defaults.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from crl_jax.host import memory as host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="glibc malloc thresholds (Linux)")

MALLOC_PROBE = textwrap.dedent("""
    import ctypes, json, resource, sys
    from crl_jax.host import memory as host_memory
    info = host_memory.tune_malloc() if sys.argv[1] == "tuned" else None
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    n = 48 * 2**20                           # 48 MiB: above glibc's 32 MiB mmap ceiling

    def use_once():                          # allocate, touch every page, free
        p = libc.malloc(n)
        ctypes.memset(p, 1, n)
        libc.free(p)

    use_once()                               # first use: faults the pages once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        use_once()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    print(json.dumps({"faults": faults, "pages": n / 4096, "info": info}))
""")

THREAD_ARENA_PROBE = textwrap.dedent("""
    import ctypes, json, resource, sys, threading
    from crl_jax.host import memory as host_memory
    info = host_memory.tune_malloc() if sys.argv[1] == "tuned" else None
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    n = 40 * 2**20                           # two of them do not fit one 64 MiB arena heap
    out = {}

    def work():                              # a new thread: its own arena, as XLA's threads
        keep = libc.malloc(n)
        ctypes.memset(keep, 1, n)

        def use_once():                      # lands in a second heap, which it empties
            p = libc.malloc(n)
            ctypes.memset(p, 1, n)
            libc.free(p)

        use_once()
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(5):
            use_once()
        out["faults"] = (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / 5
        libc.free(keep)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print(json.dumps({"faults": out["faults"], "pages": n / 4096, "info": info}))
""")

STEP_PROBE = textwrap.dedent("""
    import argparse, json, resource, sys
    from crl_jax.host import memory as host_memory
    if sys.argv[1] == "tuned":
        host_memory.tune_malloc()
    from benchmarks import harness as bt
    args = argparse.Namespace(data_dir=bt.default_data_dir())
    # batch 2560: ~42 MB of XLA temporaries per step (between glibc's 32 MiB mmap ceiling
    # and a thread arena's 64 MiB heap)
    config, method, mesh, source, layout = bt.setup_model("numerical_case2", args, 2560)
    runner = bt.StepRunner(method, config, mesh, layout, source(0))
    runner.run(4)                            # the heap settles over the first steps
    per_step = []
    for _ in range(7):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        runner.run(1)
        per_step.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"faults": sorted(per_step)[3], "all": per_step,
                      "temp_pages": runner.temp_mb * 2**20 / 4096}))
""")


DISPATCH_STEP_PROBE = textwrap.dedent("""
    import argparse, json, resource, sys
    from crl_jax.host import memory as host_memory
    host_memory.tune_malloc()
    dispatch = host_memory.set_cpu_dispatch(sys.argv[1])
    from benchmarks import harness as bt
    args = argparse.Namespace(data_dir=bt.default_data_dir())
    # batch 4096, one pass: ~67 MB of XLA temporaries, above a thread arena's 64 MiB heap
    config, method, mesh, source, layout = bt.setup_model("numerical_case2", args, 4096)
    runner = bt.StepRunner(method, config, mesh, layout, source(0))
    runner.run(3)
    per_step = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        runner.run(1)
        per_step.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"faults": sorted(per_step)[2], "all": per_step, "dispatch": dispatch,
                      "temp_pages": runner.temp_mb * 2**20 / 4096}))
""")

DISPATCH_RULES_PROBE = textwrap.dedent("""
    import json, sys
    import jax
    from crl_jax.host import memory as host_memory
    out = {"first": host_memory.set_cpu_dispatch()}        # mode from the environment
    out["flag_async"] = bool(jax.config.values["jax_cpu_enable_async_dispatch"])
    jax.block_until_ready(jax.numpy.ones(3) + 1)           # the backend starts here
    out["same"] = host_memory.set_cpu_dispatch(out["first"]["dispatch"])
    other = "async" if out["first"]["dispatch"] == "inline" else "inline"
    out["other"] = host_memory.set_cpu_dispatch(other)
    print(json.dumps(out))
""")


def _probe(script, mode, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CRL_JAX_MALLOC_TUNING", "CRL_JAX_CPU_DISPATCH")}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", script, mode], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_freed_large_buffers_are_reused():
    default = _probe(MALLOC_PROBE, "default")
    tuned = _probe(MALLOC_PROBE, "tuned")
    assert tuned["info"]["applied"], tuned["info"]
    # glibc's defaults map the 48 MiB afresh on every allocation: every page faults again
    assert default["faults"] > 0.9 * default["pages"], default
    # tuned, the freed buffer is reused
    assert tuned["faults"] < 0.05 * tuned["pages"], tuned


def test_emptied_thread_arena_heaps_are_kept():
    """glibc unmaps a thread arena's heap once it is entirely free, whatever the trim
    threshold; the top pad above the heap size keeps it (the training loop's faults)."""
    default = _probe(THREAD_ARENA_PROBE, "default")
    tuned = _probe(THREAD_ARENA_PROBE, "tuned")
    assert tuned["info"]["applied"] and tuned["info"]["top_pad"] > 64 * 2**20, tuned["info"]
    assert default["faults"] > 0.9 * default["pages"], default
    assert tuned["faults"] < 0.05 * tuned["pages"], tuned


def test_opt_out_by_environment():
    off = _probe(MALLOC_PROBE, "tuned", {"CRL_JAX_MALLOC_TUNING": "0"})
    assert off["info"] == {"applied": False, "reason": "CRL_JAX_MALLOC_TUNING=0"}
    assert off["faults"] > 0.9 * off["pages"], off


@pytest.mark.slow
def test_train_step_temporaries_are_not_page_faulted_every_step():
    # median over single steps: a step now and then still maps memory afresh
    default = _probe(STEP_PROBE, "default")
    tuned = _probe(STEP_PROBE, "tuned")
    assert default["temp_pages"] > 32 * 2**20 / 4096     # above glibc's mmap ceiling
    assert default["faults"] > 0.5 * default["temp_pages"], default
    assert tuned["faults"] < 0.05 * tuned["temp_pages"], tuned


@pytest.mark.slow
def test_inline_dispatch_reuses_temporaries_above_a_thread_arena_heap():
    """Async, the step runs on a worker thread whose arena cannot hold its > 64 MiB of
    temporaries: they are mapped afresh every step. Inline, they come from the main arena."""
    inline = _probe(DISPATCH_STEP_PROBE, "inline")
    asynchronous = _probe(DISPATCH_STEP_PROBE, "async")
    assert inline["dispatch"] == {"dispatch": "inline", "applied": True, "reason": ""}
    assert asynchronous["dispatch"]["dispatch"] == "async"
    assert inline["temp_pages"] > 64 * 2**20 / 4096, inline
    assert asynchronous["faults"] > 0.5 * asynchronous["temp_pages"], asynchronous
    assert inline["faults"] < 0.05 * inline["temp_pages"], inline


def test_dispatch_default_environment_and_late_calls():
    default = _probe(DISPATCH_RULES_PROBE, "")
    assert default["first"] == {"dispatch": "inline", "applied": True, "reason": ""}
    assert default["flag_async"] is False
    assert default["same"]["applied"]
    # once JAX's backend has started, the other mode cannot be applied: said, not raised
    assert default["other"]["applied"] is False and default["other"]["dispatch"] == "inline"
    assert "set_cpu_dispatch('async') before the first JAX computation" in \
        default["other"]["reason"]
    opted_out = _probe(DISPATCH_RULES_PROBE, "", {"CRL_JAX_CPU_DISPATCH": "async"})
    assert opted_out["first"] == {"dispatch": "async", "applied": True, "reason": ""}
    assert opted_out["flag_async"] is True


def test_unknown_dispatch_mode_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("CRL_JAX_CPU_DISPATCH", "threads")
    with pytest.raises(ValueError, match=r"CRL_JAX_CPU_DISPATCH='threads'.*'inline', 'async'"):
        host_memory.set_cpu_dispatch()
    with pytest.raises(ValueError, match=r"mode='sync'"):
        host_memory.set_cpu_dispatch("sync")
