"""The remixing diagnostic (crl_jax.remixing) on a finished smoke personax run: it
reproduces the report's MCC and matching, writes one row per true latent, changes nothing in
the workdir's checkpoints, and restore_only refuses a workdir whose stage A changed."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from configs import synthetic as synthetic_config


def _listing(workdir):
    """{path: (size, mtime_ns)} of everything under the checkpoint folders and the
    fingerprint (the files a restore must not touch)."""
    out = {}
    for name in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, name)
        if name.startswith("checkpoints") or name == "stage_a.sha256" or name == "generator":
            if os.path.isfile(path):
                st = os.stat(path)
                out[name] = (st.st_size, st.st_mtime_ns)
                continue
            for root, dirs, files in os.walk(path):
                for d in dirs:
                    out[os.path.relpath(os.path.join(root, d), workdir) + "/"] = None
                for f in files:
                    p = os.path.join(root, f)
                    st = os.stat(p)
                    out[os.path.relpath(p, workdir)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from crl_jax import experiments
    config = synthetic_config.get_config("smoke")
    config.eval.plots = False
    workdir = str(tmp_path_factory.mktemp("remix") / "run")
    report = experiments.run(config, workdir)
    assert report is not None
    return workdir, config


def test_remixing_reproduces_the_report_and_touches_no_checkpoint(finished_run, tmp_path):
    from crl_jax import remixing
    workdir, _ = finished_run
    before = _listing(workdir)
    assert any(k.startswith("checkpoints_sparsity/") for k in before)
    out_dir = str(tmp_path / "out")
    assert remixing.main(["remixing", workdir, "--n_components", "100", "--out", out_dir]) == 0
    assert _listing(workdir) == before

    with open(os.path.join(out_dir, "remixing.json")) as f:
        out = json.load(f)
    assert os.path.exists(os.path.join(out_dir, "remixing.md"))
    with open(os.path.join(workdir, "report.json")) as f:
        report = json.load(f)["evaluation"]
    ref = [s["mcc_pearson"] for s in report["per_seed"]]
    np.testing.assert_allclose(out["mcc"], ref, atol=1e-6, rtol=0)
    assert all(out["same_matching"])
    for s, seed in enumerate(report["per_seed"]):
        est_of_true = dict(zip(seed["matching"]["true_idx"], seed["matching"]["est_idx"]))
        assert [est_of_true[i] for i in range(len(out["names"]))] == out["matched_est_idx"][s]

    D = len(out["names"])
    assert len(out["rows"]) == D == len(out["adjacency"])
    for row in out["rows"]:
        for k in ("a", "b", "c", "d"):
            assert np.isfinite(row[k]), (row["latent"], k)
    c = np.asarray(out["per_seed"]["c"])
    b = np.asarray(out["per_seed"]["b"])
    assert c.shape == b.shape == (len(ref), D)
    assert np.all(c >= b - 0.05), (b, c)
    md = open(os.path.join(out_dir, "remixing.md")).read()
    assert sum(line.startswith(f"| {n} |") for n in out["names"] for line in md.splitlines()) == D


def test_a_run_older_than_the_newer_stage_b_fields_is_still_restored(finished_run, tmp_path):
    import shutil
    from crl_jax import remixing
    workdir, _ = finished_run
    old = str(tmp_path / "old")
    shutil.copytree(workdir, old)
    path = os.path.join(old, "config.json")
    with open(path) as f:
        saved = json.load(f)
    for key in remixing.TRAINED_WITH_BEFORE:
        del saved["stage_b"][key.split(".")[1]]
    with open(path, "w") as f:
        json.dump(saved, f)
    assert remixing.main(["remixing", old, "--n_components", "100", "--out", str(tmp_path / "o")]) == 0
    with open(os.path.join(tmp_path, "o", "remixing.json")) as f:
        out = json.load(f)
    with open(os.path.join(workdir, "report.json")) as f:
        ref = [s["mcc_pearson"] for s in json.load(f)["evaluation"]["per_seed"]]
    np.testing.assert_allclose(out["mcc"], ref, atol=1e-6, rtol=0)


def test_restore_only_refuses_a_changed_stage_a_and_deletes_nothing(finished_run, tmp_path):
    import shutil

    from crl_jax import evaluation, input_pipeline, parallel, staged
    from crl_jax.errors import ResumeError
    from crl_jax.experiments import synthetic as exp
    from crl_jax import remixing

    src, config = finished_run
    workdir = str(tmp_path / "altered")
    shutil.copytree(src, workdir)
    with open(os.path.join(workdir, staged.FINGERPRINT), "w") as f:
        f.write("0" * 64 + "\n")
    before = _listing(workdir)

    process, method, mesh = exp.setup(config, workdir)
    batches = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                      parallel.batch_sharding(mesh))
    val_xs = evaluation.heldout_samples(process, config.data)["val"].x
    with pytest.raises(ResumeError, match="refusing to restore"):
        staged.train_personax(config, workdir, method, mesh, batches,
                              exp.model_layout(process.spec), val_xs, restore_only=True)
    assert _listing(workdir) == before

    # the command line: one line, exit code 2, nothing written
    assert remixing.main(["remixing", workdir]) == 2
    assert _listing(workdir) == before
    assert not os.path.exists(os.path.join(workdir, "remixing.json"))


def test_bad_workdirs_are_one_line_errors(tmp_path, capsys):
    from crl_jax import remixing
    assert remixing.main(["remixing", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"model": {"name": "multiview"}}, f)
    assert remixing.main(["remixing", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a personax" in err and len(err.strip().splitlines()) == 1


def test_an_unfinished_stage_is_refused(finished_run, tmp_path, capsys):
    import shutil

    from crl_jax import remixing
    src, _ = finished_run
    workdir = str(tmp_path / "unfinished")
    shutil.copytree(src, workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints_sparsity"))
    before = _listing(workdir)
    assert remixing.main(["remixing", workdir]) == 2
    err = capsys.readouterr().err
    assert "stage sparsity is unfinished" in err and len(err.strip().splitlines()) == 1
    assert _listing(workdir) == before
