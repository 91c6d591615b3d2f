"""Makes the reference numbers `finch compare` and `finch eval` are held to: two fixed sets of predictions of
models A and B on the same examples, and what scipy and statsmodels give for them.

    pip install numpy scipy==1.17.1 statsmodels==0.15.0
    python3 make_fixture.py

reference.json, for each case:
- `correct_a`, `correct_b` (right or wrong per example), `loss_sums_a`, `loss_sums_b` (each example's summed token
  losses) and `tokens` (its scored tokens);
- `wilson_a`: statsmodels' proportion_confint(method="wilson") of A's exact match;
- `mcnemar_statistic`, `mcnemar_p`: statsmodels' mcnemar(table, exact=True);
- `paired_difference` and its Wald interval `paired_low`, `paired_high` (the formula, written out below);
- `bootstrap_difference`, `bootstrap_low`, `bootstrap_high`: scipy.stats.bootstrap of B's minus A's per-token mean
  loss, paired, percentile method, 10,000 resamples. A bootstrap's interval depends on its draws, so Finch's (its own
  generator) is held to it within Monte Carlo error, not digit for digit.
"""
import json

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

rng = np.random.default_rng(20261207)
cases = []
for n, p_a, p_b, shift in [(500, 0.858, 0.874, -0.02), (120, 0.60, 0.60, 0.0), (40, 0.5, 0.9, -0.3)]:
    correct_a = rng.random(n) < p_a
    # B agrees with A on most examples, as two fine-tunes of one base do.
    flip = rng.random(n) < 0.25
    correct_b = np.where(flip, rng.random(n) < p_b, correct_a)
    tokens = rng.integers(5, 40, n)
    loss_sums_a = rng.gamma(2.0, 0.5, n) * tokens
    loss_sums_b = loss_sums_a + (shift + rng.normal(0, 0.2, n)) * tokens
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    both = int(np.sum(correct_a & correct_b))
    neither = n - only_a - only_b - both
    test = mcnemar([[both, only_a], [only_b, neither]], exact=True)
    low, high = proportion_confint(int(correct_a.sum()), n, alpha=0.05, method="wilson")
    d = (only_b - only_a) / n
    half = 1.959963984540054 * np.sqrt(((only_a + only_b) - (only_b - only_a) ** 2 / n) / n ** 2)

    def statistic(la, lb, t):
        return (lb.sum() - la.sum()) / t.sum()

    boot = stats.bootstrap((loss_sums_a, loss_sums_b, tokens), statistic, paired=True, vectorized=False,
                           n_resamples=10_000, method="percentile", random_state=np.random.default_rng(7))
    cases.append({
        "correct_a": correct_a.tolist(), "correct_b": correct_b.tolist(), "tokens": tokens.tolist(),
        "loss_sums_a": loss_sums_a.tolist(), "loss_sums_b": loss_sums_b.tolist(),
        "wilson_a": [low, high], "mcnemar_statistic": float(test.statistic), "mcnemar_p": float(test.pvalue),
        "paired_difference": d, "paired_low": d - half, "paired_high": d + half,
        "bootstrap_difference": float(statistic(loss_sums_a, loss_sums_b, tokens)),
        "bootstrap_low": float(boot.confidence_interval.low), "bootstrap_high": float(boot.confidence_interval.high),
    })
json.dump({"cases": cases}, open("reference.json", "w"))
for c in cases:
    print(len(c["tokens"]), "mcnemar", c["mcnemar_statistic"], c["mcnemar_p"], "paired", c["paired_low"], c["paired_high"],
          "bootstrap", c["bootstrap_low"], c["bootstrap_high"])
