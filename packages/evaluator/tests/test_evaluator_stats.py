import math

import numpy as np
import pytest

from anemone_evaluator.filters import build_filter, last_boxed, strip_think
from anemone_evaluator.metrics import aggregate, exact_match, numeric_match, score_multiple_choice
from anemone_evaluator.stats import bootstrap_ci, mcnemar_exact, mean_stderr, paired_bootstrap
from anemone_evaluator.tasks import FilterStep


def test_filters():
    last = build_filter([FilterStep(function="regex", regex_pattern=r"-?\d+", group_select=-1)])
    assert last(" 12 + 30 = 42") == "42" and last("no digits") == "[invalid]"
    first_group = build_filter([FilterStep(function="regex", regex_pattern=r"(\d+)|(x)")])
    assert first_group("x 5") == "x"
    assert build_filter([FilterStep(function="last_number")])("about 1,234.5 units") == "1234.5"
    assert last_boxed(r"so \boxed{\frac{1}{2}} and \boxed{42}") == "42"
    assert last_boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert strip_think("<think>7? no, 8</think> The answer is 9") == "The answer is 9"
    assert strip_think("reasoning</think>9") == "9" and strip_think("<think>unfinished") == ""
    pipeline = build_filter([FilterStep(function="strip_think"), FilterStep(function="boxed")])
    assert pipeline(r"<think>\boxed{1}</think> \boxed{2}") == "2"


def test_scores():
    assert score_multiple_choice([-1.0, -2.0], [True, False], ["a", "bbbb"], 0, ["acc", "acc_norm"]) == \
        {"acc": 1.0, "acc_norm": 0.0}  # acc_norm: -1/1 < -2/4
    assert exact_match("Paris", "paris", ignore_case=True) == 1.0 and exact_match("Paris.", "Paris") == 0.0
    assert exact_match("Paris.", "Paris", ignore_punctuation=True) == 1.0
    assert numeric_match("1,000.0", "1000") == 1.0 and numeric_match("x", "1") == 0.0


def test_mean_metrics_report_stderr_and_ci():
    agg = aggregate("acc", [1, 0, 1, 1, 0, 1, 1, 1])
    assert agg["value"] == 0.75 and agg["stderr"] == pytest.approx(np.std([1, 0, 1, 1, 0, 1, 1, 1], ddof=1) / math.sqrt(8))
    assert agg["ci95"][0] <= 0.75 <= agg["ci95"][1] and agg["n"] == 8


def test_perplexity_is_corpus_level():
    per = [(-10.0, 5, 20), (-30.0, 5, 20)]
    assert aggregate("word_perplexity", per)["value"] == pytest.approx(math.exp(40 / 10))
    assert aggregate("bits_per_byte", per)["value"] == pytest.approx(40 / 40 / math.log(2))
    assert aggregate("bits_per_byte", per)["higher_is_better"] is False


def test_mcnemar_and_paired_bootstrap():
    a = np.array([1] * 30 + [0] * 10)
    b = np.array([1] * 20 + [0] * 20)  # b loses 10 questions a had right, gains none
    p, n10, n01 = mcnemar_exact(a, b)
    assert (n10, n01) == (10, 0) and p == pytest.approx(2 / 2**10)
    assert mcnemar_exact(a, a)[0] == 1.0
    delta, p_boot, _ = paired_bootstrap(a, b)
    assert delta == pytest.approx(-0.25) and p_boot < 0.05
    assert mean_stderr(np.array([1.0])) == 0.0
    lo, hi = bootstrap_ci(np.mean, (np.array([0.0, 1.0] * 50),))
    assert lo < 0.5 < hi
