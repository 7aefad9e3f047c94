"""CLI: python -m crl_jax.level1 --data=FILE --out=DIR [--features=a,b:discrete] [--traits=...]
[--tests=kci,rcit,hsic,chisq,gsq] [--alpha=0.05] [--jobs=2] [--max_n=N] [--llms=median,4o,...]
[--columns=layout.json] [--id_column=NAME|none] [--llm_columns=4o,DS,gemini] [--trait_template=...]
"""

from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from crl_jax import cli, workdir
from crl_jax.data.personax import FEATURE_KINDS, PersonaXColumns, load_table
from crl_jax.errors import UsageError
from crl_jax.level1.citests import ALL_TESTS
from crl_jax.level1.outputs import write_outputs
from crl_jax.level1.runner import run_level1, summarise


def _csv_list(s: str | None) -> list[str] | None:
    if s is None:
        return None
    items = [v.strip() for v in s.split(",") if v.strip()]
    return items or None


def parse_features(spec: str | None, columns: PersonaXColumns) -> dict[str, str] | None:
    """"a,b:discrete,c:continuous" -> {name: kind}; names without ":kind" keep the kind from the
    column layout (or "auto")."""
    items = _csv_list(spec)
    if items is None:
        return None
    out = {}
    for item in items:
        name, _, kind = item.partition(":")
        kind = kind or columns.features.get(name, "auto")
        if kind not in FEATURE_KINDS:
            raise UsageError(f"--features entry {item!r}: kind {kind!r} is not one of {FEATURE_KINDS}.")
        out[name] = kind
    return out


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m crl_jax.level1",
                                description="PersonaX Level I: pairwise independence tests, traits x features.")
    p.add_argument("--data", required=True, help="table file (.parquet or .csv)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--features", help="comma list; optional ':continuous|discrete|both|auto' suffix per name "
                   "(default: the features of --columns)")
    p.add_argument("--traits", help="comma list of trait names (default: all Big Five)")
    p.add_argument("--tests", default=",".join(ALL_TESTS), help=f"comma list from {','.join(ALL_TESTS)}")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--jobs", type=int, default=1, help="worker processes (-1: all cores)")
    p.add_argument("--max_n", type=int, default=None, help="subsample each pair to at most this many rows")
    p.add_argument("--llms", help="trait groups: 'median' and/or LLM column prefixes (default: all)")
    p.add_argument("--columns", help="JSON file with a PersonaXColumns layout")
    p.add_argument("--id_column", help="id column name, or 'none' to use row numbers")
    p.add_argument("--llm_columns", help="comma list of LLM prefixes in the trait column names")
    p.add_argument("--trait_template", help="trait column template, e.g. '{llm}_{trait}'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min_n", type=int, default=10, help="pairs with fewer complete rows are recorded as failed")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="keep the traceback of an error")
    return p


def check_args(args) -> None:
    """Flag checks before the table is read (one line each, exit code 2)."""
    if not os.path.isfile(args.data):
        what = "is a directory" if os.path.isdir(args.data) else "not found"
        raise UsageError(f"--data={args.data}: {what}; pass a PersonaX table (.parquet, .pq or .csv)")
    if args.columns and not os.path.isfile(args.columns):
        raise UsageError(f"--columns={args.columns}: not found; pass a JSON column layout file")
    if not 0.0 < args.alpha < 1.0:
        raise UsageError(f"--alpha={args.alpha} must be in (0, 1), e.g. 0.05")
    if args.jobs == 0 or args.jobs < -1:
        raise UsageError(f"--jobs={args.jobs} must be a positive number of processes or -1 (all cores)")
    if args.min_n < 6:
        raise UsageError(f"--min_n={args.min_n} must be >= 6 (the HSIC gamma approximation needs n >= 6)")
    if args.max_n is not None and args.max_n < args.min_n:
        raise UsageError(f"--max_n={args.max_n} must be >= --min_n={args.min_n}")
    unknown = [t for t in (_csv_list(args.tests) or []) if t not in ALL_TESTS]
    if unknown or not _csv_list(args.tests):
        raise UsageError(f"--tests={args.tests}: {unknown or 'empty'}; choose from {','.join(ALL_TESTS)}")
    workdir.prepare(args.out, flag="--out")


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, sys.argv[1:] if argv is None else argv, prog="python -m crl_jax.level1")


def _main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    columns = PersonaXColumns.from_json(args.columns) if args.columns else PersonaXColumns()
    changes: dict = {"image": (), "text": ()}  # Level I needs no embeddings
    if args.id_column is not None:
        changes["id_column"] = None if args.id_column.lower() == "none" else args.id_column
    if args.llm_columns is not None:
        changes["llms"] = tuple(_csv_list(args.llm_columns) or ())
    if args.trait_template is not None:
        changes["trait_column_template"] = args.trait_template
    features = parse_features(args.features, columns)
    if features is not None:
        changes["features"] = features
    columns = columns.replace(**changes)
    if not columns.features:
        raise UsageError("No features to test: pass --features=a,b,c or a --columns layout listing features.")
    traits = _csv_list(args.traits)
    table = load_table(args.data, columns, traits=traits)
    result = run_level1(table, traits=traits, tests=_csv_list(args.tests) or [], llms=_csv_list(args.llms),
                        alpha=args.alpha, jobs=args.jobs, max_n=args.max_n, seed=args.seed, min_n=args.min_n,
                        progress=not args.no_progress)
    paths = write_outputs(result, args.out, extra={"command": " ".join(sys.argv), "data": args.data,
                                                    "max_n": args.max_n, "seed": args.seed,
                                                    "n_rows": table.n})
    print(summarise(result))
    print("wrote: " + json.dumps(paths, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
