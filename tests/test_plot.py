"""``python -m benchmarks.plot``: the figures of docs/PERFORMANCE.md from benchmark JSON.

The numbers plotted are checked against the JSON they come from (a ratio taken against the
wrong row, a lost pair or a mislabelled bar would fail here), and the command in the docs
draws all four figures from the shipped results.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import plot as pp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(batch, ms_by_seeds, per_call=10, config="synthetic"):
    return [{"config": config, "batch": batch, "seeds": s, "steps_per_call": per_call,
             "ms_per_step_median": ms} for s, ms in ms_by_seeds.items()]


def test_seed_ratios_divide_by_the_one_seed_row_of_the_same_batch():
    result = {"rows": _rows(16, {8: 4.0, 1: 0.8, 2: 1.4}) + _rows(64, {1: 2.0, 8: 11.0})}
    ratios = pp.seed_ratios(result)
    assert list(ratios) == [(16, 10), (64, 10)]
    seeds, r = ratios[(16, 10)]
    assert seeds == [1, 2, 8]
    np.testing.assert_allclose(r, [1.0, 1.75, 5.0])
    np.testing.assert_allclose(ratios[(64, 10)][1], [1.0, 5.5])


def test_seed_ratios_without_one_seed_is_an_error_that_says_what_to_run():
    with pytest.raises(ValueError, match="no 1-seed row.*--seeds_list"):
        pp.seed_ratios({"rows": _rows(16, {2: 1.0, 8: 4.0})})


def test_seeds_figure_plots_the_ratios_and_the_target():
    fig = pp.seeds_figure([{"rows": _rows(16, {1: 1.0, 8: 5.0})}])
    ax = fig.axes[0]
    data = {line.get_label(): line.get_xydata().tolist() for line in ax.get_lines()}
    assert data["batch 16"] == [[1.0, 1.0], [8.0, 5.0]]
    target = [v for k, v in data.items() if k.startswith("target")]
    assert target == [[[8.0, 3.0]]]


def test_seeds_figure_draws_the_floor_in_the_colour_of_its_batch():
    floor = {"rows": [{"batch": 16, "seeds": 1, "floor_vs_one_seed": 0.6},
                      {"batch": 16, "seeds": 8, "floor_vs_one_seed": 3.7}]}
    assert pp.floor_points(floor) == (16, [1, 8], [0.6, 3.7])
    fig = pp.seeds_figure([{"rows": _rows(16, {1: 1.0, 8: 5.0})}], [floor])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    floor_line = lines["batch 16: products + optimiser alone"]
    assert floor_line.get_xydata().tolist() == [[1.0, 0.6], [8.0, 3.7]]
    assert floor_line.get_color() == lines["batch 16"].get_color()


def _pair_files(folder, lib, rows):
    with open(folder / f"synthetic_b16_s1-8_{lib}.json", "w") as f:
        json.dump({"rows": rows}, f)


def test_cpu_dots_pairs_match_cases_across_libraries(tmp_path):
    _pair_files(tmp_path, "ynnpack", _rows(16, {1: 0.75, 8: 3.7}))
    _pair_files(tmp_path, "eigen", _rows(16, {1: 0.90, 8: 4.9}))
    # a case measured with one library only is left out, not compared with nothing
    with open(tmp_path / "synthetic_b64_s1_ynnpack.json", "w") as f:
        json.dump({"rows": _rows(64, {1: 1.3})}, f)
    pairs = pp.cpu_dots_pairs([str(tmp_path)])
    assert [(p["batch"], p["seeds"]) for p in pairs] == [(16, 1), (16, 8)]
    np.testing.assert_allclose([p["speedup"] for p in pairs], [0.75 / 0.90, 3.7 / 4.9])


def test_cpu_dots_pairs_error_when_there_are_none(tmp_path):
    with pytest.raises(ValueError, match="no \\*_ynnpack.json / \\*_eigen.json pairs"):
        pp.cpu_dots_pairs([str(tmp_path)])


def test_rule_pick_is_the_cpu_dots_rule_whatever_the_environment(monkeypatch):
    monkeypatch.setenv("CRL_JAX_CPU_DOTS", "eigen")
    assert pp.rule_pick("synthetic", 16, 1) == "ynnpack"     # small products
    assert pp.rule_pick("synthetic", 512, 3) == "eigen"      # the default run
    assert pp.rule_pick("synthetic", 512, 8) == "ynnpack"    # too many seeds
    assert os.environ["CRL_JAX_CPU_DOTS"] == "eigen"         # left as it was


def test_throughput_rows_take_the_ratio_per_step():
    result = {"throughput": [
        {"batch": 4096, "microbatch_mode": "one pass", "ratio_vs_matmul": 0.43},
        {"batch": 4096, "microbatch_mode": "auto", "ratio_vs_matmul": None},
    ]}
    assert pp.throughput_rows(result, "eigen") == [("eigen", 4096, "one pass", 0.43)]
    fig = pp.throughput_figure([("eigen", result)])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [0.43]


def test_growth_figure_needs_a_growth_series():
    with pytest.raises(ValueError, match="no growth series"):
        pp.growth_figure({"growth": {"other": {}}})


def test_missing_input_is_one_error_naming_the_flag(tmp_path):
    with pytest.raises(SystemExit, match="--growth: no file"):
        pp.main([f"--out={tmp_path}", f"--growth={tmp_path / 'missing.json'}"])


def test_a_result_of_another_benchmark_is_refused_by_name(tmp_path):
    wrong = os.path.join(ROOT, "benchmarks", "results", "step_growth_cpu.json")
    with pytest.raises(SystemExit, match="--seeds: .*has no 'rows'"):
        pp.main([f"--out={tmp_path}", f"--seeds={wrong}"])


def test_docs_command_draws_the_four_figures_from_the_shipped_results(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.plot", f"--out={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("seeds", "growth", "throughput", "cpu_dots"):
        path = tmp_path / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert path.stat().st_size > 10_000, name
