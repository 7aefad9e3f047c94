"""benchmarks/step_memory.py: the peak of the step's temporaries rebuilt from XLA's dumps."""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import step_memory as sm  # noqa: E402

LIVE_RANGE = """HloLiveRange (max 6):
  InstructionSequence:
    0:p
    1:a
    2:b
    3:c
  BufferLiveRange:
    a{}:1-2
    b{}:2-5
    c{}:3-4
    d{}:5-6
    p{}:0-6
  Live ranges at 3 (peak):
    b: 400 bytes
"""

ASSIGNMENT = """allocation 0: size 64, parameter 0, shape |f32[16]| at ShapeIndex {}:
 value: <1 p @0> (size=64,offset=0): f32[16]{0}
allocation 1: size 500, preallocated-temp:
 value: <2 a @0> (size=100,offset=0): f32[25]{0}
 value: <3 b @0> (size=400,offset=100): f32[100]{0}
 value: <4 c @0> (size=100,offset=0): f32[5,5]{1,0}
 value: <6 d @0> (size=400,offset=100): f32[100]{0}
allocation 2: size 4, thread-local:
 value: <5 t @0> (size=4,offset=0): f32[]
"""


def test_parsers_and_peak_on_a_hand_written_dump():
    ranges = sm.parse_live_ranges(LIVE_RANGE)
    assert ranges == {"a": (1, 2), "b": (2, 5), "c": (3, 4), "d": (5, 6), "p": (0, 6)}
    size, values = sm.parse_temp_values(ASSIGNMENT)
    assert size == 500
    # only the temporary allocation's values: not the parameter p nor the thread-local t
    assert values == {"a": (100, "f32[25]{0}", 0), "b": (400, "f32[100]{0}", 100),
                      "c": (100, "f32[5,5]{1,0}", 0), "d": (400, "f32[100]{0}", 100)}
    at, peak, names = sm.peak_live(ranges, values)
    # a and b overlap at 2 (500 bytes), b and c at 3-4 (500): the first maximum wins
    assert (at, peak, sorted(names)) == (2, 500, ["a", "b"])
    # d reuses b's slot at 5: counted once, under the value defined first
    assert sm.peak_live({"b": (2, 5), "d": (5, 6)}, values) == (2, 400, ["b"])
    assert sm.peak_live({"d": (5, 6), "b": (2, 5), "c": (5, 5)}, values)[1:] == (500, ["b", "c"])


def test_no_temp_allocation_is_one_clear_error():
    try:
        sm.parse_temp_values("allocation 0: size 4, thread-local:\n")
    except ValueError as e:
        assert "preallocated-temp" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_real_step_peak_matches_xla_and_names_the_activations(tmp_path):
    out = tmp_path / "mem.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "step_memory.py"), "--m=2",
         "--batch=96", f"--out={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    # the rebuilt peak is XLA's own heap simulation's: at most the allocation, nearly all of it
    assert 0.9 * result["xla_temp_mb"] <= result["peak_live_mb"] <= result["xla_temp_mb"] + 1e-6
    assert sum(r["bytes"] for r in result["rows"]) / 2**20 >= result["peak_live_mb"] - 1e-6
    # the hidden activations (K=3, batch 96, 128 units) are live at the peak and attributed
    # to their part and pass: the encoders' four (2 modalities x 2 layers; their backward
    # comes last) and at least one decoder's; and no forward product output of that shape
    # (networks.leaky_relu: the backward keeps the activation only)
    count = {}
    for r in result["rows"]:
        if re.fullmatch(r"f32\[(1,)?3,96,128\]", r["shape"]):
            count[r["group"]] = count.get(r["group"], 0) + r["count"]
    assert count.get("encoder forward elementwise", 0) >= 4, count
    assert count.get("decoder forward elementwise", 0) >= 1, count
    assert not any(g.endswith("forward matmul") for g in count), count
    assert "live at the peak" in proc.stdout


def test_image_model_without_its_files_is_one_usage_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "step_memory.py"),
         "--model=variant_mnist_3m", f"--data_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "needs mnist/ and fashion-mnist/" in proc.stderr and "Traceback" not in proc.stderr


def test_in_a_process_whose_jax_backend_started_it_stops_before_any_work(monkeypatch):
    import jax
    jax.devices()   # the backend starts: XLA_FLAGS set from here on are never read
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    try:
        sm.main(["--m=2", "--batch=64"])
    except RuntimeError as e:
        assert "run it as a script" in str(e)
    else:
        raise AssertionError("expected a RuntimeError")
