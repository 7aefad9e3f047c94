"""The notebooks in notebooks/ run top to bottom (headless, CPU, smoke configs) and draw figures.

Each notebook is executed with nbclient in a fresh ``python3`` kernel of this interpreter, with
``CRL_JAX_NOTEBOOK_SMOKE=1`` (the notebooks' only switch), working directory ``notebooks/``
and ``TMPDIR`` set to the test's temporary folder, so that the work directories the notebooks
create with ``tempfile.mkdtemp`` can be inspected afterwards.
"""
from __future__ import annotations

import base64
import csv
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_FILES = ("report.json", "report.md", "latent_scatter.png", "graph.png", "r2_blocks.png",
             "training_curves.png")

# notebook -> (number of inline PNG figures, prefix of the work folder it makes, number of
#              runs it makes, files it writes at the top of its work folder, needs the MNIST /
#              Fashion-MNIST image files)
NOTEBOOKS = {
    "quickstart": (4, "crl_jax_quickstart_", 1, (), False),
    "variant_mnist": (4, "crl_jax_variant_mnist_", 1, (), True),
    "ablations": (1, "crl_jax_ablations_", 2,
                  ("results.csv", "results_per_seed.csv", "sweep.png"), False),
}


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _kernel_spec_dir(root: Path) -> Path:
    """A ``python3`` kernelspec that runs this interpreter (first on JUPYTER_PATH)."""
    from ipykernel.kernelspec import write_kernel_spec
    spec_dir = root / "kernels" / "python3"
    spec_dir.parent.mkdir(parents=True, exist_ok=True)
    write_kernel_spec(str(spec_dir))
    argv = json.loads((spec_dir / "kernel.json").read_text())["argv"]
    assert argv[0] == sys.executable, argv
    return root


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    cells = _code_cells(nb)
    assert cells, f"{name}.ipynb has no code cells"
    for cell in cells:
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{name}.ipynb is committed with outputs; clear them (Jupyter's Clear All Outputs, "
            f"or jupyter nbconvert --clear-output --inplace notebooks/{name}.ipynb)")
    source = "\n".join(c.source for c in cells)
    assert "CRL_JAX_NOTEBOOK_SMOKE" in source
    assert "setup_tpu" not in source  # gone from Colab; jax.devices() finds TPUs by itself


# The default run executes the quickstart; the other notebooks (variant MNIST 220 s, the
# ablations 139 s on 2 EPYC cores) are `slow`.
@pytest.mark.parametrize("name", [n if n == "quickstart" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(NOTEBOOKS)])
def test_notebook_runs_headless(name, tmp_path, monkeypatch, data_dir):
    n_pngs, prefix, n_runs, top_files, needs_images = NOTEBOOKS[name]
    if needs_images and not (data_dir / "mnist").is_dir():
        pytest.skip(f"MNIST IDX files not found under {data_dir} (set CRL_JAX_DATA_DIR)")
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setenv("CRL_JAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("TMPDIR", str(work))
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_spec_dir(tmp_path / "jupyter")))
    if needs_images:
        monkeypatch.setenv("CRL_JAX_DATA_DIR", str(data_dir))

    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError with the traceback if any cell fails

    cells = _code_cells(nb)
    assert all(c.execution_count is not None for c in cells)
    outputs = [o for c in cells for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "smoke mode" in text  # the switch reached the kernel
    assert "nothing to install" in text  # the test never runs pip
    assert "backend: CPU" in text
    pngs = [base64.b64decode(o.data["image/png"]) for o in outputs
            if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]
    assert len(pngs) == n_pngs, f"{name}: {len(pngs)} inline figures, expected {n_pngs}"
    assert all(p.startswith(PNG_MAGIC) and len(p) > 1000 for p in pngs)

    runs = sorted(work.glob(f"{prefix}*"))
    assert len(runs) == 1, runs
    for f in top_files:
        assert (runs[0] / f).is_file(), f"{name}: no {f} in {runs[0]}"
    reports = sorted(runs[0].rglob("report.json"))
    assert len(reports) == n_runs, reports
    for report_path in reports:
        for f in RUN_FILES:
            assert (report_path.parent / f).is_file(), f"{name}: no {f} in {report_path.parent}"
        report = json.loads(report_path.read_text())
        if sys.platform.startswith("linux") and "CRL_JAX_MALLOC_TUNING" not in os.environ:
            assert report["malloc_tuning"]["applied"], report["malloc_tuning"]  # host.setup()
        mcc = report["evaluation"]["summary"]["mcc_pearson"]
        assert len(mcc["per_seed"]) == report["num_seeds"] >= 1
        assert all(0.0 <= v <= 1.0 for v in mcc["per_seed"])
    if name == "ablations":
        _check_sweep_table(runs[0], reports)


def _check_sweep_table(sweep_dir: Path, reports: list[Path]) -> None:
    """results.csv holds, per grid point, the mean and std over seeds of each run's report."""
    table = {(int(r["data.n_measurements"]), r["metric"]): r
             for r in csv.DictReader(open(sweep_dir / "results.csv"))}
    grid = sorted({k for k, _ in table})
    assert len(grid) == len(reports) >= 2, grid
    for report_path in reports:
        config = json.loads((report_path.parent / "config.json").read_text())
        summary = json.loads(report_path.read_text())["evaluation"]["summary"]
        k = config["data"]["n_measurements"]
        for metric, stat in (("mcc_pearson", summary["mcc_pearson"]),
                             ("graph.shd", summary["graph"]["shd"])):
            row = table[(k, metric)]
            assert int(row["n_seeds"]) == len(stat["per_seed"])
            assert float(row["mean"]) == pytest.approx(stat["mean"], abs=1e-9)
            assert float(row["std"]) == pytest.approx(stat["std"], abs=1e-9)


def _set_repo():
    spec = importlib.util.spec_from_file_location("set_repo", NOTEBOOK_DIR / "set_repo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_badges_and_repo_url_name_one_repository_changed_in_one_place(tmp_path):
    """Every Colab badge (notebooks and README) and every notebook's REPO_URL name the same
    repository, and notebooks/set_repo.py moves all of them at once."""
    set_repo = _set_repo()
    root = NOTEBOOK_DIR.parent
    badges = sum(len(set_repo.BADGE.findall(p.read_text())) for p in set_repo.files(root))
    clones = sum(len(set_repo.CLONE.findall(p.read_text())) for p in set_repo.files(root))
    assert badges == 2 * len(NOTEBOOKS) and clones == len(NOTEBOOKS), (badges, clones)
    assert len({repo for repo, _ in set_repo.found(root)}) == 1, set_repo.found(root)
    (tmp_path / "notebooks").mkdir()
    for path in set_repo.files(root):
        shutil.copy(path, tmp_path / path.relative_to(root))
    changed = set_repo.set_repo("someone/fork", "dev", root=tmp_path)
    assert len(changed) == len(NOTEBOOKS) + 1
    assert set_repo.found(tmp_path) == {("someone/fork", "dev"), ("someone/fork", "")}
    for path in changed:   # still valid notebooks, whose install cell clones the new URL
        if path.suffix == ".ipynb":
            nb = nbformat.read(path, as_version=4)
            nbformat.validate(nb)
            source = "\n".join(c.source for c in _code_cells(nb))
            assert 'REPO_URL = "https://github.com/someone/fork.git"' in source
