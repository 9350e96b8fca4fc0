"""Statistics for comparing training objectives (mle, tailr, mixce, emo) across training seeds.

A claim "objective A beats B" is a claim about what training with A does, so it must hold over
the training seeds: three seeds are three replicates, however many sampling runs, prompts or
items each seed was scored on. Sampling runs, prompts and items nested in a seed are repeated
measurements of one trained network; pooling them with the seeds treats seed-to-seed variation as
if it were measurement noise, and a test on 15 (seed, run) pairs or 250 prompts then rejects far
more often than its alpha (29 % / 19 % at 0.05 in the simulations of issue 22). So the report
reduces each seed to one value and every test here works on those values:

* ``mean_interval``: seed mean with a Student-t interval, t(S-1) over S seed values;
* ``welch_test``: two arms of seed values (or the pre-trained model's sampling runs), Welch's t;
* ``one_sample_t_test`` / ``paired_t_test``: seed values against a fixed number (a deterministic
  pre-trained score), or per-prompt differences of two single checkpoints;
* ``mcnemar_exact``: per-item correctness of two single checkpoints (ICL with one seed);
* ``holm``: Holm-Bonferroni adjustment when one table makes several comparisons;
* ``min_detectable_difference`` (any t-test, from its se and df) and
  ``min_detectable_accuracy_difference`` (McNemar): what the test actually run can see;
* ``variance_components`` / ``seeds_needed``: how the variance splits between seeds and sampling
  runs, and how many seeds x sampling runs a stated difference needs (power planning);
* ``fit_power_law``: the scaling-law fit ``y = a * x**b`` with exact t intervals;
  ``bootstrap_power_law``: the same fit with intervals from resampling seeds within each x;
* ``significance_mark`` / ``format_interval``: how the numbers are printed.

Distributions come from ``scipy.stats``; only formulas a reader should check are written here.
One module per kind of question: ``intervals``, ``comparisons``, ``power``, ``power_law``
(``checks``: the input checks they share).
"""
from emo_ray.stats.checks import ArrayLike
from emo_ray.stats.comparisons import (HOLM, HOLM_NOTE, Comparison, holm, mcnemar_exact, one_sample_t_test,
                                       paired_t_test, welch_test)
from emo_ray.stats.intervals import Interval, format_interval, mean_interval, significance_mark
from emo_ray.stats.power import (VarianceComponents, min_detectable_accuracy_difference, min_detectable_difference,
                                 seeds_needed, variance_components)
from emo_ray.stats.power_law import NoFit, PowerLawFit, bootstrap_power_law, fit_power_law

__all__ = [
    "HOLM", "HOLM_NOTE", "ArrayLike", "Comparison", "Interval", "NoFit", "PowerLawFit", "VarianceComponents",
    "bootstrap_power_law", "fit_power_law", "format_interval", "holm", "mcnemar_exact", "mean_interval",
    "min_detectable_accuracy_difference", "min_detectable_difference", "one_sample_t_test", "paired_t_test",
    "seeds_needed", "significance_mark", "variance_components", "welch_test",
]
