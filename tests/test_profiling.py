"""``python -m benchmarks.profiling``: ``time`` attributes XLA operations to parts of the
step (and profiles the real step end to end: not a timing test, it checks what the profile
groups); ``memory`` rebuilds the peak of the step's temporaries from XLA's dumps."""
import json
import os
import re
import subprocess
import sys

import pytest

from benchmarks import profiling as ps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sm = ps   # the memory half lives in the same module

FWD = "jit(train_step)/vmap(jvp(PersonaXVAE))/PersonaXVAE.encode/vmap(encoder_m1)/FeatureEncoder_0"
BWD = ("jit(train_step)/vmap(transpose(jvp(PersonaXVAE)))/PersonaXVAE.decode/vmap(decoder_m1)/"
       "MLP_0/Dense_1")

# A hand-written module in the form XLA:CPU prints: a matmul fusion that lost its op_name
# (its inner dot has none either) and reads a forward activation and a backward error; a
# YNNPACK fusion that is a reduction, not a matmul; the optimiser's update.
HLO = f"""HloModule jit_train_step

%fused_matmul (param_0.1: f32[3,16,128], param_1.1: f32[3,16,128]) -> f32[3,128,128] {{
  %param_0.1 = f32[3,16,128]{{2,1,0}} parameter(0)
  %param_1.1 = f32[3,16,128]{{2,1,0}} parameter(1)
  ROOT %dot.7 = f32[3,128,128]{{2,1,0}} dot(%param_0.1, %param_1.1), lhs_batch_dims={{0}}, lhs_contracting_dims={{1}}, rhs_batch_dims={{0}}, rhs_contracting_dims={{1}}
}}

%fused_reduce (param_0.2: f32[], param_1.2: f32[3,128,128]) -> f32[] {{
  %param_1.2 = f32[3,128,128]{{2,1,0}} parameter(1)
  %square.1 = f32[3,128,128]{{2,1,0}} multiply(%param_1.2, %param_1.2), metadata={{op_name="jit(train_step)/vmap()/square"}}
  %param_0.2 = f32[] parameter(0)
  ROOT %reduce_sum.1 = f32[] reduce(%square.1, %param_0.2), dimensions={{0,1,2}}, to_apply=%add, metadata={{op_name="jit(train_step)/vmap()/reduce_sum"}}
}}

ENTRY %main.1 (a: f32[3,16,128], b: f32[3,16,128]) -> f32[] {{
  %a = f32[3,16,128]{{2,1,0}} parameter(0)
  %b = f32[3,16,128]{{2,1,0}} parameter(1)
  %act_fusion = f32[3,16,128]{{2,1,0}} fusion(%a), kind=kLoop, calls=%x, metadata={{op_name="{FWD}/jit(leaky_relu)/select_n"}}
  %err_fusion = f32[3,16,128]{{2,1,0}} fusion(%b), kind=kLoop, calls=%y, metadata={{op_name="{BWD}/jit(leaky_relu)/select_n"}}
  %ynn_fusion.3 = f32[3,128,128]{{2,1,0}} fusion(%act_fusion, %err_fusion), kind=kCustom, calls=%fused_matmul, backend_config={{"fusion_config":{{"kind":"__ynn_fusion"}}}}
  %ynn_fusion.4 = f32[] fusion(%c, %ynn_fusion.3), kind=kCustom, calls=%fused_reduce, metadata={{op_name="jit(train_step)/vmap()/reduce_sum"}}
  ROOT %copy.2 = f32[] copy(%ynn_fusion.4)
}}
"""


def test_hlo_instructions_recovers_op_name_and_matmul_kind():
    ins = ps.hlo_instructions(HLO)
    # the fusion without op_name reads a forward and a backward value: backward pass
    opcode, op_name, matmul = ins["ynn_fusion.3"]
    assert (opcode, matmul) == ("fusion", True)
    assert op_name.startswith(BWD)
    assert ps.classify(*ins["ynn_fusion.3"]) == "decoder backward matmul"
    # a YNNPACK fusion around a reduction is not a matmul
    assert ins["ynn_fusion.4"][2] is False
    assert ps.classify(*ins["ynn_fusion.4"]) == "optimiser update"
    assert ps.classify(*ins["act_fusion"]) == "encoder forward elementwise"
    assert ps.classify(*ins["copy.2"]) == ps.UNATTRIBUTED


@pytest.mark.parametrize("op_name,matmul,group", [
    (f"{FWD}/Dense_1/dot_general", True, "encoder forward matmul"),
    (f"{BWD}/transpose", True, "decoder backward matmul"),
    ("jit(train_step)/vmap(transpose(vmap(jvp(PersonaXVAE))))/PersonaXVAE.decode/"
     "vmap(decoder_m1)/MLP_0/Dense_0/dot_general", True, "decoder backward matmul"),
    (f"{FWD}/Dense_0/transpose", False, "encoder forward elementwise"),
    ("jit(train_step)/vmap(transpose(jvp(PersonaXVAE)))/PersonaXVAE.log_prior/causal_prior/"
     "causal_prior.noise/bj,ijh->bih/dot_general", True, "causal prior backward matmul"),
    ("jit(train_step)/vmap(jvp(PersonaXVAE))/PersonaXVAE.log_prior/causal_prior/add", False,
     "causal prior forward elementwise"),
    ("jit(train_step)/vmap(jvp(PersonaXVAE))/jit(_normal)/exp", False,
     "other loss terms forward elementwise"),
    ("jit(train_step)/vmap()/vmap(jit(_threefry_fold_in))/shift_left", False, "random numbers"),
    ("jit(train_step)/vmap(jit(clip))/min", False, "optimiser update"),
    ("", False, ps.UNATTRIBUTED),
])
def test_classify(op_name, matmul, group):
    assert ps.classify("fusion", op_name, matmul) == group


def test_leaf_intervals_count_a_loop_through_its_body():
    events = [(0, 100, "while.1"), (10, 40, "fusion.2"), (50, 90, "fusion.3"),
              (120, 130, "copy.4")]
    leaves = ps.leaf_intervals(events)
    assert [e[2] for e in leaves] == ["fusion.2", "fusion.3", "copy.4"]
    # two threads overlapping: the union counts the overlap once
    assert ps.union_ns([(0, 10), (5, 20), (30, 40)]) == 30


def test_operations_on_the_calling_thread_are_counted():
    """With inline dispatch the calling thread runs some of the step's operations: they are
    grouped like those of XLA's threads; its other events (Python, dispatch) are not runtime."""
    from types import SimpleNamespace as NS

    def line(name, events):
        return NS(name=name, events=[NS(start_ns=a, end_ns=b, name=n) for a, b, n in events])

    ins = ps.hlo_instructions(HLO)
    profile = NS(planes=[NS(name="/host:CPU", lines=[
        line("python", [(0, 10_000_000, "PjitFunction(train_step)"),
                        (1_000_000, 3_000_000, "act_fusion"),
                        (11_000_000, 12_000_000, "pybind11 call")]),
        line("tf_XLAEigen/1", [(0, 2_000_000, "err_fusion"), (2_000_000, 3_000_000, "copy.9"),
                               (3_000_000, 7_000_000, "end: err_fusion")])])])
    groups, busy_ms, unknown = ps.thread_time_by_group(profile, ins, steps=1)
    assert groups == {"encoder forward elementwise": 2.0, "decoder backward elementwise": 2.0}
    assert busy_ms == 3.0 and unknown == {"copy.9": 1.0}


@pytest.mark.slow
def test_profiling_time_end_to_end(tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.profiling", "time", "--batch=16", "--seeds=1,2",
         "--steps=3",
         "--rounds=1", "--budget=0.01", f"--out={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["seeds"] for r in rows] == [1, 2]
    for r in rows:
        groups = r["thread_ms"]
        # every part of the model and the optimiser are found in the real step
        for g in ("encoder forward matmul", "encoder backward matmul", "decoder forward matmul",
                  "decoder backward matmul", "optimiser update"):
            assert groups.get(g, 0.0) > 0.0, (g, groups)
        assert any(g.startswith("causal prior") for g in groups)
        assert abs(sum(groups.values()) - r["thread_ms_total"]) < 1e-9
        # nearly all operation time is attributed to a part of the step
        assert groups.get(ps.UNATTRIBUTED, 0.0) < 0.25 * r["thread_ms_total"], groups
        assert 0 < r["busy_ms"] <= r["thread_ms_total"] + 1e-9
        assert r["trace_coverage"] == pytest.approx(r["busy_ms"] / r["step_ms"])
        assert r["step_ms"] > 0
    assert "optimiser update" in proc.stdout and "step wall time" in proc.stdout


def test_coverage_warning_only_below_the_bound():
    row = {"seeds": 3, "step_ms": 19.0, "trace_coverage": 0.34}
    assert "cover only 34%" in ps.coverage_warning(row)
    assert "not the step's split" in ps.coverage_warning(row)
    assert ps.coverage_warning(dict(row, trace_coverage=ps.MIN_TRACE_COVERAGE)) == ""


def test_profiling_time_rejects_bad_seeds():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.profiling", "time", "--seeds=0,2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--seeds" in proc.stderr


# ----------------------------------------------------------------------------- memory
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


@pytest.mark.slow
def test_memory_real_step_peak_matches_xla_and_names_the_activations(tmp_path):
    out = tmp_path / "mem.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.profiling", "memory", "--m=2", "--batch=96",
         f"--out={out}"],
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
        [sys.executable, "-m", "benchmarks.profiling", "memory", "--model=variant_mnist_3m",
         f"--data_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "needs mnist/ and fashion-mnist/" in proc.stderr and "Traceback" not in proc.stderr


def test_in_a_process_whose_jax_backend_started_it_stops_before_any_work(monkeypatch):
    import jax
    jax.devices()   # the backend starts: XLA_FLAGS set from here on are never read
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    try:
        sm.main(["memory", "--m=2", "--batch=64"])
    except RuntimeError as e:
        assert "run it as a command" in str(e)
    else:
        raise AssertionError("expected a RuntimeError")
