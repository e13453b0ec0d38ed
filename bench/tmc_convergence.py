"""TMC-Shapley (or Data Banzhaf, Beta Shapley) until it converges: German credit, n = 500, logistic regression, Ray workers.

    .venv/bin/python bench/tmc_convergence.py [--methods tmc] [--n 500] [--val 300] [--stderr-tol 0.005]
                                              [--workers 2]

``--methods banzhaf`` runs Data Banzhaf by maximum sample reuse (``banzhaf_msr``) instead: the
same stopping rule over samples (one utility call each) instead of permutations, pyDVL's
``MSRBanzhafValuation`` side by side. ``--methods beta`` runs Beta(16, 1)-Shapley
(``beta_shapley``): the same rule over samples, each one marginal per point with
|S| ~ BetaBinomial(n−1; 1, 16) (mean (n−1)/17, so small, cheap fits), 2n utility calls per
sample; pyDVL's ``BetaShapleyValuation`` side by side with a sampler that draws the same
subsets (``bench/valuation.py``'s ``pydvl_beta_shapley``). ``make bench-tmc`` runs all three
(three result files).

The set function is the one of ``bench/valuation.py`` part (c): logistic regression (lbfgs,
1 BLAS thread) trained on the subset, accuracy on 300 validation rows, the same split. Each
run stops by the standard-error rule (``stderr_tol``: every value's standard error at most
the tolerance, after at least ``--min-perms`` permutations) or at ``--max-perms``. Truncation
as in part (c) (rtol 0.01, the first prefix within it). Permutations go to Ray tasks,
``--workers`` at a time, each its own child seed, so the values do not depend on the number of
workers. Run with two seeds: the agreement between two independent converged runs (within 2
combined standard errors, Spearman) is the check that "converged" means what it says.

pyDVL runs side by side when it is installed (``make bench-tmc`` uses ``.venv-bench``): its
``ShapleyValuation`` with the same truncation (or the method's counterpart above), stopped by
its own ``AbsoluteStandardError`` at the same tolerance, on the same set function; wall time
and agreement with curation's run.

Needs ``data/german_credit.csv`` (``python infra/data/fetch_valuation.py``; ``make bench-tmc`` runs it).
Result: ``bench/results/<tmc|banzhaf|beta>_convergence.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from curation.value.semivalues import banzhaf_msr, beta_shapley, tmc_shapley  # noqa: E402
from curation.value.utility import ModelUtility  # noqa: E402


def run_pydvl(method: str, Xtr, ytr, Xva, yva, tol: float, args: argparse.Namespace) -> dict:
    """pyDVL's TMC-Shapley (or MSR Banzhaf, Beta Shapley) on the same set function, stopped by
    its own standard-error rule."""
    from joblib import parallel_config
    from pydvl.valuation import AbsoluteStandardError, MaxUpdates
    from valuation import pydvl_beta_shapley, pydvl_msr_banzhaf, pydvl_tmc

    fit = {"tmc": pydvl_tmc, "banzhaf": pydvl_msr_banzhaf, "beta": pydvl_beta_shapley}[method]
    stop = AbsoluteStandardError(tol, fraction=1.0, burn_in=args.min_perms) | MaxUpdates(args.max_perms)
    t0 = time.perf_counter()
    with parallel_config(n_jobs=args.workers):
        values, stderr, counts = fit(Xtr, ytr, Xva, yva, stop)
    wall = time.perf_counter() - t0
    print(f"pyDVL {method} tol {tol}: {int(counts.max())} updates, {wall:.1f}s", flush=True)
    return {"values": values, "stderr": stderr, "wall": wall, "updates": int(counts.max())}


def run_curation(method: str, u: ModelUtility, tol: float, seed: int, args: argparse.Namespace, map_fn):
    """(result, draws, utility calls, the rule that stopped it or None) of one curation run
    stopped by ``stderr_tol``."""
    if method == "tmc":
        r = tmc_shapley(u, max_permutations=args.max_perms, truncation_rtol=0.01, truncation_patience=0,
                        conv_rtol=0, stderr_tol=tol, conv_window=args.min_perms,
                        batch=BATCH[method], n_jobs=args.workers, map_fn=map_fn, rng=np.random.default_rng(seed))
        return r, r.info["permutations"], r.info["utility_calls"], r.info["converged_by"]
    if method == "banzhaf":
        r = banzhaf_msr(u, n_samples=args.max_perms, stderr_tol=tol, min_samples=args.min_perms,
                        batch=BATCH[method], n_jobs=args.workers, map_fn=map_fn, rng=np.random.default_rng(seed))
        return r, r.info["samples"], r.info["samples"], "stderr" if r.info["converged"] else None
    r = beta_shapley(u, alpha=16.0, beta=1.0, n_samples=args.max_perms, stderr_tol=tol, min_samples=args.min_perms,
                     batch=BATCH[method], n_jobs=args.workers, map_fn=map_fn, rng=np.random.default_rng(seed))
    # info does not count utility calls: every sample calls U(S ∪ i) and U(S) once per point
    # (cache hits and guarded subsets included; they train no model)
    return r, r.info["samples"], 2 * u.n * r.info["samples"], "stderr" if r.info["converged"] else None


NAMES = {"tmc": ("TMC-Shapley", "permutations", "tmc_convergence.md"),
         "banzhaf": ("Data Banzhaf (MSR)", "samples", "banzhaf_convergence.md"),
         "beta": ("Beta(16,1)-Shapley", "samples", "beta_convergence.md")}
# draws per Ray task: enough work that Ray's dispatch is a small share of a task, little enough
# that the work thrown away at the stop stays small (a truncated permutation is ~0.5 s of fits,
# an MSR sample one fit of a few ms, a Beta sample 2n = 1000 calls of mostly small fits, ~2.5 s)
BATCH = {"tmc": 8, "banzhaf": 50, "beta": 2}
# pyDVL's side, as the result file names it (and, for Beta, why that sampler)
PYDVL_KIND = {"tmc": "`ShapleyValuation` + `PermutationSampler(RelativeTruncation(0.01))`",
              "banzhaf": "`MSRBanzhafValuation`",
              "beta": "`BetaShapleyValuation(alpha=16, beta=1)` + `StratifiedSampler(RandomSizeIteration, "
                      "SequentialIndexIteration)` drawing size k with probability C(n−1, k)·w(k) = "
                      "BetaBinomial(n−1; 1, 16), one sweep over the n points per task (curation's own sampling: "
                      "both average unweighted marginals of the same distribution; a `PermutationSampler` would "
                      "weight each prefix marginal by n·P(|S| = k), 15.5 at k = 0 and below 0.1 past k = 150, so "
                      "about 70% of its fits, the largest ones, would count for almost nothing, and a "
                      "`UniformSampler`, with sizes near n/2, worse)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="tmc", choices=sorted(NAMES), help="the valuation method")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--val", type=int, default=300)
    ap.add_argument("--stderr-tol", type=float, nargs="+", default=[0.005, 0.002])
    ap.add_argument("--min-perms", type=int, default=50)
    ap.add_argument("--max-perms", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--pydvl", action=argparse.BooleanOptionalAction, default=None,
                    help="run pyDVL side by side (default: when it is installed, as in .venv-bench)")
    ap.add_argument("--out", default=None, help="default: bench/results/<method>_convergence.md")
    args = ap.parse_args()
    method = args.methods
    title, draw, out_name = NAMES[method]
    args.out = args.out or str(ROOT / "bench" / "results" / out_name)
    if args.pydvl is None:
        import importlib.util

        args.pydvl = importlib.util.find_spec("pydvl") is not None

    import ray
    from scipy.stats import spearmanr
    from sklearn.preprocessing import StandardScaler
    from valuation import load

    from flows.ray_runtime import ray_map

    X, y, desc = load("german")
    p = np.random.default_rng([0, 777]).permutation(len(y))  # the split of bench/valuation.py part (c)
    tr, va = p[: args.n], p[args.n: args.n + args.val]
    sc = StandardScaler().fit(X[tr])
    Xtr, ytr, Xva, yva = sc.transform(X[tr]), y[tr], sc.transform(X[va]), y[va]
    load_before = os.getloadavg()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    runs = []  # (tol, seed, result, wall)
    try:
        for tol in args.stderr_tol:
            for seed in args.seeds:
                u = ModelUtility(Xtr, ytr, Xva, yva, model="logistic")
                t0 = time.perf_counter()
                r, draws, calls, by = run_curation(method, u, tol, seed, args, ray_map)
                wall = time.perf_counter() - t0
                runs.append((tol, seed, r, wall, draws, calls, by))
                print(f"{method} tol {tol} seed {seed}: {draws} {draw}, converged={r.info['converged']} ({by}), "
                      f"max stderr {r.info['stderr_max']:.4f}, {wall:.1f}s, {calls / draws:.0f} calls per draw",
                      flush=True)
    finally:
        ray.shutdown()
    pydvl_runs = [run_pydvl(method, Xtr, ytr, Xva, yva, tol, args) for tol in args.stderr_tol] if args.pydvl else []
    load_after = os.getloadavg()

    rows = [f"| stderr_tol | seed | {draw} | stopped by | max stderr | utility calls / {draw[:-1]} | wall s |",
            "|---:|---:|---:|---|---:|---:|---:|"]
    for tol, seed, r, wall, draws, calls, by in runs:
        rows.append(f"| {tol:g} | {seed} | {draws} | {by or 'max_' + draw} "
                    f"| {r.info['stderr_max']:.4f} | {calls / draws:.0f} | {wall:.1f} |")
    agree = ["| stderr_tol | within 2 combined SE | Spearman | spread of the values (sd) |", "|---:|---:|---:|---:|"]
    for tol in args.stderr_tol:
        a, b = [x[2] for x in runs if x[0] == tol][:2]
        within = float((np.abs(a.values - b.values) <= 2 * np.sqrt(a.stderr ** 2 + b.stderr ** 2)).mean())
        agree.append(f"| {tol:g} | {within:.1%} | {float(spearmanr(a.values, b.values).statistic):.3f} "
                     f"| {float(np.std(a.values)):.4f} |")
    versus = []
    if pydvl_runs:
        versus = [f"pyDVL side by side, in the same run: {PYDVL_KIND[method]} "
                  "stopped by its own `AbsoluteStandardError(stderr_tol, fraction=1, burn_in=min_perms)` "
                  f"(or `MaxUpdates({args.max_perms})`), joblib with {args.workers} processes, the same set function "
                  "(bench/valuation.py's guarded logistic regression). Agreement with curation's seed-1 run at the "
                  "same tolerance:", "",
                  "| stderr_tol | pyDVL updates | pyDVL wall s | curation wall s (seed 1) | pyDVL / curation | "
                  "within 2 combined SE | Spearman |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for tol, pyd in zip(args.stderr_tol, pydvl_runs):
            _, _, a, wall_a, *_ = next(x for x in runs if x[0] == tol)
            within = float((np.abs(a.values - pyd["values"]) <= 2 * np.sqrt(a.stderr ** 2 + pyd["stderr"] ** 2)).mean())
            versus.append(f"| {tol:g} | {pyd['updates']} | {pyd['wall']:.1f} | {wall_a:.1f} | "
                          f"{pyd['wall'] / wall_a:.2f}x | {within:.1%} | "
                          f"{float(spearmanr(a.values, pyd['values']).statistic):.3f} |")
        versus.append("")
    md = [
        f"# {title} until it converges",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `{os.path.relpath(sys.executable, ROOT)} bench/tmc_convergence.py {' '.join(sys.argv[1:])}`"
        + (" (`make bench-tmc`)" if args.pydvl else ""),
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average "
        f"{load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end; Ray with {args.workers} CPUs "
        f"({draw} in Ray tasks, {BATCH[method]} per task)",
        f"- data: {desc}; {args.n} training rows, {args.val} validation rows (the split of bench/valuation.py "
        "part c); utility: logistic regression trained on the subset, validation accuracy",
        f"- stopping: every value's standard error <= stderr_tol (accuracy units) after at least "
        f"{args.min_perms} {draw}, at most {args.max_perms}"
        + {"tmc": "; truncation rtol 0.01 (first hit)",
           "beta": f"; alpha 16, beta 1: |S| ~ BetaBinomial({args.n - 1}; 1, 16), mean {(args.n - 1) / 17:.1f}"
           }.get(method, ""),
        "",
        *rows,
        "",
        "Two independent converged runs per tolerance (about 95% of points within 2 combined standard errors "
        "is expected when both estimate the same values with honest standard errors; the Spearman rank "
        "correlation grows as the tolerance shrinks against the spread of the values):",
        "",
        *agree,
        "",
        *versus,
    ]
    Path(args.out).write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
