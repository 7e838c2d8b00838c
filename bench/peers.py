"""One fit of a Python peer for bench/peers.R, in a fresh process so that its peak memory is the fit's.

    python bench/peers.py <gpboost|mixedlm> <data.csv> <crossed|insteval>

Reads the CSV the driver wrote from R (fwrite of the data frame), fits the model with the
named tool and prints one line of key=value pairs: the tool's version, the rows, the data's
size in memory (MB), the fit's elapsed and CPU seconds (the best of 5 timed batches of calls below
1 s, as bench/scale-child.R times fr_fit; one call otherwise), the process's peak resident
memory (VmHWM, MB), and the estimates: vc_<group> and vc_Residual (variances), fe_<term>
(fixed effects).

mixedlm.lmer fits by REML, as lme4 does; gpboost.GPModel by maximum likelihood (it has no
REML), from the same design: an intercept, the numeric covariates and treatment dummies.
"""
import sys
import time
from importlib.metadata import version

import numpy as np
import pandas as pd

MODELS = {
    "crossed": dict(formula="y ~ x + (1 | user) + (1 | item)", response="y",
                    numeric=["x"], factors=[], groups=["user", "item"]),
    "insteval": dict(formula="y ~ service + (1 | s) + (1 | d) + (1 | dept)", response="y",
                     numeric=[], factors=["service"], groups=["s", "d", "dept"]),
}


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def best_of(f):
    """Elapsed and CPU seconds per call (CPU: the process's, all threads), as bench/scale-child.R's
    best_of(): one call when it takes >= 1 s, else the best of 5 timed batches."""
    def timed(reps):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(reps):
            f()
        return ((time.perf_counter() - start) / reps, (time.process_time() - cpu) / reps)

    once = timed(1)
    if once[0] >= 1:
        return once
    reps = max(1, int(np.ceil(0.1 / max(once[0], 1e-4))))
    return min((timed(reps) for _ in range(5)), key=lambda t: t[0])


def design(d, m):
    """An intercept, the numeric covariates and treatment dummies (first level dropped)."""
    cols = {"(Intercept)": np.ones(len(d))}
    for v in m["numeric"]:
        cols[v] = d[v].to_numpy(dtype=float)
    for v in m["factors"]:
        for level in d[v].cat.categories[1:]:
            cols[f"{v}{level}"] = (d[v] == level).to_numpy(dtype=float)
    return pd.DataFrame(cols)


def fit_gpboost(d, m):
    import gpboost as gpb

    X = design(d, m)
    groups = np.column_stack([d[g].cat.codes.to_numpy() for g in m["groups"]])
    y = d[m["response"]].to_numpy(dtype=float)
    box = {}

    def once():
        model = gpb.GPModel(group_data=groups, likelihood="gaussian")
        model.fit(y=y, X=X)
        box["model"] = model

    seconds = best_of(once)
    model = box["model"]
    cov = model.get_cov_pars(format_pandas=False)
    est = {"vc_Residual": cov[0]}
    est.update({f"vc_{g}": cov[1 + i] for i, g in enumerate(m["groups"])})
    est.update({f"fe_{name}": value for name, value in zip(X.columns, model.get_coef(format_pandas=False))})
    return seconds, est


def fit_mixedlm(d, m):
    import warnings

    import mixedlm

    box = {}

    def once():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the boundary-fit warning
            box["fit"] = mixedlm.lmer(m["formula"], d)

    seconds = best_of(once)
    fit = box["fit"]
    vc = fit.VarCorr().as_dict()
    est = {"vc_Residual": float(fit.sigma) ** 2}
    est.update({f"vc_{g}": float(vc[g]["(Intercept)"]) for g in m["groups"]})
    # mixedlm names a factor's dummy "service.1"; R and the design above, "service1".
    rename = {f"{v}.{level}": f"{v}{level}" for v in m["factors"] for level in d[v].cat.categories}
    est.update({f"fe_{rename.get(name, name)}": float(value) for name, value in fit.fixef().items()})
    return seconds, est


def main():
    tool, path, kind = sys.argv[1:4]
    m = MODELS[kind]
    dtypes = {v: "string" for v in m["groups"] + m["factors"]}
    d = pd.read_csv(path, engine="pyarrow", dtype=dtypes)
    for v in m["groups"] + m["factors"]:
        d[v] = d[v].astype("category")
    data_mb = d.memory_usage(deep=True).sum() / 2**20
    (seconds, cpu), est = {"gpboost": fit_gpboost, "mixedlm": fit_mixedlm}[tool](d, m)
    out = {"version": version(tool), "n": len(d), "data_mb": data_mb, "time": seconds, "cpu": cpu,
           "peak_mb": peak_mb()}
    out.update(est)
    print(" ".join(f"{k}={v}" for k, v in out.items()), flush=True)


if __name__ == "__main__":
    main()
