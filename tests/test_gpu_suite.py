"""benchmarks/gpu_suite.sh: every command it would run on a GPU is a valid one.

The suite runs only where a GPU is lent, so drift (a renamed benchmark flag, a bad section
list) would show up only there, costing the lease. Here the interpreter is replaced by a
recorder that parses each benchmark command line with the benchmark's own parser and the
main command's config with crl_jax's, without running them.
"""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RECORDER = textwrap.dedent("""\
    #!{python}
    import os, sys
    sys.path.insert(0, os.getcwd())                      # as `python -m` does
    args = sys.argv[1:]
    with open(os.environ["RECORD"], "a") as f:
        f.write(" ".join(args) + "\\n")
    if args[:2] == ["-m", "benchmarks.step"]:
        from benchmarks import step
        parsed = step.parse_args(args[2:])               # exits 2 on a bad flag
        print(f"  numerical_case2 B=0 (parsed: {{','.join(parsed.sections)}})")
    elif args[:2] == ["-m", "benchmarks.loop"]:
        from benchmarks import loop
        loop.parse_args(args[2:])
    elif args[:2] == ["-m", "crl_jax.main"]:
        from crl_jax import main
        parsed = main.parse(["main"] + args[2:])         # loads configs/synthetic.py
        assert parsed.config.train.steps > 0
    elif args[:1] == ["-c"]:
        exec(args[1])
""")


def _run_suite(tmp_path, data_dir, *extra, env_extra=None):
    recorder = tmp_path / "python"
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    record = tmp_path / "record.txt"
    env = dict(os.environ, PYTHON=str(recorder), RECORD=str(record), **(env_extra or {}))
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", str(tmp_path / "out"),
                           str(data_dir), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    log = (tmp_path / "out" / "suite.log").read_text()
    lines = record.read_text().splitlines() if record.exists() else []
    return proc, log, lines


def test_every_section_runs_a_valid_command(tmp_path, data_dir):
    proc, log, lines = _run_suite(tmp_path, data_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    benches = [l for l in lines if l.startswith("-m benchmarks.")]
    sections = ["throughput", "images", "seeds", "growth", "parts"]
    for name in sections:
        assert f"=== {name}: exit 0" in log, log            # the parser accepted its flags
        assert any(f"{name}_gpu.json" in l for l in benches)
    assert "=== main: exit 0" in log and "=== image_chunks" not in log, log
    assert "=== main_single" not in log, log
    assert any(l.startswith("-m crl_jax.main --config=configs/synthetic.py") for l in lines)
    seeds = next(l for l in benches if "seeds_gpu.json" in l)
    assert seeds.startswith("-m benchmarks.loop seeds ") and "--per_call_list=10" in seeds


def test_image_chunks_only_when_asked(tmp_path, data_dir):
    proc, log, lines = _run_suite(tmp_path, data_dir, "image_chunks")
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    assert "=== image_chunks: exit 0" in log and "=== main" not in log
    (line,) = [l for l in lines if "benchmarks.step" in l]
    assert "--chunk_series=images" in line and "--chunk_image_batches=1024,4096" in line


def test_main_single_runs_the_main_command_with_one_step_per_call(tmp_path, data_dir):
    proc, log, lines = _run_suite(tmp_path, data_dir, "main,main_single")
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    assert "=== main: exit 0" in log and "=== main_single: exit 0" in log, log
    mains = [l for l in lines if l.startswith("-m crl_jax.main")]
    assert len(mains) == 2 and "steps_per_call" not in mains[0]
    assert mains[1].endswith("--config.train.steps_per_call=1")   # parsed by crl_jax.main
    assert (tmp_path / "out" / "main_single.log").exists()


def test_section_subset_runs_only_those(tmp_path, data_dir):
    proc, log, lines = _run_suite(tmp_path, data_dir, "seeds,main")
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    assert "=== seeds: exit 0" in log and "=== main: exit 0" in log
    assert "=== throughput" not in log and "=== growth" not in log
    assert [l.split()[1] for l in lines if l.startswith("-m benchmarks.")] == ["benchmarks.loop"]


def test_unknown_section_is_refused_before_anything_runs(tmp_path):
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", str(tmp_path / "out"),
                           "../shared/data", "seeds,grwth"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, PYTHON="/nonexistent/python"))
    assert proc.returncode == 2
    assert "unknown section 'grwth'" in proc.stderr and "throughput,images" in proc.stderr
    assert not (tmp_path / "out").exists()
