"""Explain topics' verdicts are pure functions of the numbers measured at each seed: fed per-seed
numbers pointing one way, then the other, each verdict flips (supported <-> refuted) and so do
the sources it confirms and refutes; numbers inside the noise give "not settled", which confirms
and refutes nothing."""

import copy

from dnnlab.analysis.verdict import NOT_SETTLED, REFUTED, SUPPORTED
from dnnlab.studies.explain import (
    activations,
    bias_init,
    dropout_cost,
    init_variance,
    mc_dropout,
    momentum,
    selu,
    sparsity,
    symmetry,
)

JITTER = (0.0, 0.001, -0.001)   # three seeds whose numbers differ a little


def outcomes(answer):
    return [v.outcome for v in answer.verdicts]


def sources(answer):
    confirms = [c for v in answer.verdicts for c in v.confirms]
    refutes = [r for v in answer.verdicts for r in v.refutes]
    return confirms, refutes


def _symmetry_runs(copied_acc: float, copied_diff: float):
    return [{"runs": {"independent He": {"test_accuracy": 0.95 + j},
                      "equal: constant 0.01": {"test_accuracy": copied_acc + j},
                      "equal: one He draw copied": {"test_accuracy": copied_acc - j}},
             "one_neuron_per_layer_test_accuracy": 0.3, "equal_max_neuron_diff_after": copied_diff,
             "independent_min_neuron_diff_after": 0.5, "rounding_floor_diff": 3e-8,
             "collapsed_vs_wide_accuracy_gap": 0.0} for j in JITTER]


def test_symmetry_verdict_flips_and_its_floor_is_measured_not_fixed():
    a = symmetry.verdict(_symmetry_runs(0.3, 1.5e-5))   # the 1.5e-5: within rounding here
    assert outcomes(a) == [SUPPORTED, SUPPORTED] and a.head.startswith("No:")
    assert "000 answer 1 (book)" in a.verdicts[0].confirms
    assert a.verdicts[0].refutes == ["002 answer 1 (equal weights drawn with He init are fine)"]
    b = symmetry.verdict(_symmetry_runs(0.97, 0.4))
    assert outcomes(b) == [REFUTED, REFUTED] and b.head.startswith("Yes here")
    assert b.verdicts[0].confirms == ["002 answer 1 (equal weights drawn with He init are fine)"]
    c = symmetry.verdict(_symmetry_runs(0.95, 0.0))
    assert c.verdicts[0].outcome == NOT_SETTLED and c.head.startswith("Not settled")
    assert c.verdicts[0].confirms == [] and c.verdicts[0].refutes == []


def _bias_runs(const_gap: float, random_gap: float):
    return [{"accuracy": {"zeros": 0.95 + 2 * j, "constant 1": 0.95 + 2 * j + const_gap + j / 10,
                          "random (like weights)": 0.95 + 2 * j + random_gap - j / 10}}
            for j in JITTER]


def test_bias_init_verdict_flips_with_the_measurements():
    a = bias_init.verdict(_bias_runs(0.0001, -0.0001))
    assert outcomes(a) == [SUPPORTED, SUPPORTED]
    assert a.head.startswith("Yes: the bias start makes no difference")
    assert "000 answer 2 (book)" in sources(a)[0]
    b = bias_init.verdict(_bias_runs(0.03, 0.0001))
    assert b.head.startswith("Not quite: constant 1 biases beat zeros")
    assert b.verdicts[1].outcome == REFUTED and any(r.startswith("004") for r in sources(b)[1])
    c = bias_init.verdict(_bias_runs(-0.04, 0.0))
    assert "constant 1 biases did worse" in c.head and c.verdicts[1].outcome == REFUTED


def _activations_runs(book_way: bool):
    acc = {"sigmoid": 0.931, "tanh": 0.962, "relu": 0.965, "selu": 0.969, "elu": 0.968}
    if not book_way:   # the logistic wins, SELU, ELU and tanh fall far behind
        acc.update(sigmoid=0.985, selu=0.90, elu=0.91, tanh=0.89)
    ranges = {"tanh": {"in_range": True}, "sigmoid": {"in_range": True},
              "softmax": {"max_abs_row_sum_minus_1": 2.4e-7},
              "softplus": {"in_range": True, "exactly_0": 0.0}}
    if not book_way:   # softplus underflows to 0, softmax rows do not sum to 1
        ranges["softplus"]["exactly_0"] = 0.0123
        ranges["softmax"]["max_abs_row_sum_minus_1"] = 3.0e-3
    return [{"hidden": {a: {"test_accuracy": v + j * (1 + i), "seconds_per_epoch": 0.5}
                        for i, (a, v) in enumerate(acc.items())},
             "output_ranges": copy.deepcopy(ranges)} for j in JITTER]


def test_activations_verdict_flips_with_the_measurements():
    a = activations.verdict(_activations_runs(True))
    claims = {v.claim.split(" hidden")[0]: v.outcome for v in a.verdicts[:4]}
    # tanh is 0.7 points below SELU, beyond noise; SELU and ELU are within the best's spread
    assert claims == {"selu": REFUTED, "elu": REFUTED, "sigmoid": SUPPORTED, "tanh": SUPPORTED}
    confirms, refutes = sources(a)
    assert "000 answer 4 (book: SELU is a good default)" in confirms
    assert "000 answer 4 (book: logistic is rarely used in hidden layers)" in confirms
    assert outcomes(a)[-2:] == [SUPPORTED, SUPPORTED] and not [r for r in refutes if "001" in r]
    b = activations.verdict(_activations_runs(False))
    confirms, refutes = sources(b)
    assert {"000 answer 4 (book: SELU is a good default)",
            "004 answer 4 (first edition: ELU is a good default)",
            "000 answer 4 (book: logistic is rarely used in hidden layers)",
            "002 answer 4 (tanh is suitable for hidden layers)",
            "001 activations card (softplus for outputs that must be positive)"} <= set(refutes)
    assert outcomes(b)[-2:] == [REFUTED, REFUTED]
    quick = [{**r, "hidden": {k: r["hidden"][k] for k in ("sigmoid", "tanh", "relu")}}
             for r in _activations_runs(True)]   # quick mode trains a few: no claim about others
    assert not any("SELU" in c or "ELU" in c for c in sum(sources(activations.verdict(quick)), []))


def _dropout_cost_runs(book_way: bool, noisy: bool = False):
    runs = []
    for i, j in enumerate(JITTER):
        plain = [0.010 * (1 + 0.05 * ((k * 7 + i) % 5 - 2)) for k in range(10)]
        drop = [t * (1.002 if book_way else 1.7) for t in plain]
        if noisy:   # a busy machine: the dropout pass swings from 0.5x to 2x of its plain pair
            drop = [t * (0.5 if k % 2 else 2.0) for k, t in enumerate(plain)]
        epochs, epochs0 = (6 + i, 3) if book_way else (2, 4 + i)
        runs.append({"per_rate": {0.5: {"epochs_to_target": epochs, "no_dropout_epochs_to_target":
                                        epochs0, "seconds_ratio": 2.0}},
                     "inference_times": {0.0: plain, 0.5: drop}, "eval_deterministic": book_way,
                     "mc": {10: {"slowdown": (10.5 + j) if book_way else 2.2 + j, "accuracy": 0.97}},
                     "plain": {"accuracy": 0.965}})
    return runs


def test_dropout_cost_verdict_flips_and_a_noisy_machine_settles_nothing():
    a = dropout_cost.verdict(_dropout_cost_runs(True))
    assert outcomes(a) == [SUPPORTED] * 4
    assert a.head == "Yes, through slower convergence; not at inference in eval mode"
    assert sources(a)[1] == ["001 answer 7 (learner: dropout speeds up training)"]
    b = dropout_cost.verdict(_dropout_cost_runs(False))
    assert outcomes(b) == [REFUTED] * 4 and b.head.startswith("Not here")
    assert "000 answer 7 (book: no inference cost)" in sources(b)[1]
    c = dropout_cost.verdict(_dropout_cost_runs(True, noisy=True))
    timing = c.verdicts[1]
    assert timing.outcome == NOT_SETTLED and timing.confirms == timing.refutes == []
    assert "not settled on this machine" in c.head and timing.samples == "interleaved repeats"


def _init_variance_runs(book_way: bool):
    def at(fwd: float, back: float):
        return {"at_init": {"forward_ratio": fwd, "backward_ratio": back}}
    runs = []
    for j in JITTER:
        f = 1 + 10 * j
        results = {"tanh / N(0, 1)": at(1.0, 5.6e4 * f), "tanh / Glorot": at(0.31 * f, 2.3),
                   "tanh / He": at(1.1, 40.0), "relu / N(0, 1)": at(3.4e19 * f, float("inf")),
                   "relu / Glorot": at(2.9e-5 * f, 1.5e-4), "relu / He": at(0.87 * f, 1.9)}
        if not book_way:   # He+ReLU loses the signal, N(0, 1)+tanh keeps it
            results["relu / He"] = at(1.2e-6 * f, 3.0e-7)
            results["tanh / N(0, 1)"] = at(0.8 * f, 1.7)
        runs.append({"results": results, "sgd_steps": 20, "diverged_after_steps": []})
    return runs


def test_init_variance_verdict_flips_with_the_measurements():
    a = init_variance.verdict(_init_variance_runs(True))
    assert outcomes(a) == [SUPPORTED, SUPPORTED, SUPPORTED]
    assert a.head == "Yes, they keep the signal's scale from layer to layer"
    assert len(sources(a)[0]) == 4 and not sources(a)[1]
    b = init_variance.verdict(_init_variance_runs(False))
    assert outcomes(b)[:2] == [REFUTED, REFUTED] and b.head == "No, not in this run"
    assert not sources(b)[0]


def _mc_runs(helps: bool):
    runs = []
    for j in JITTER:
        def row(acc, ece, nll, j=j):
            return {"accuracy": acc + j, "ece": ece + j / 10, "nll": nll + j}
        plain = row(0.9612, 0.0211, 0.1402)
        mc = {10: row(0.9661, 0.0104, 0.1223) if helps else row(0.9551, 0.0333, 0.1622)}
        mc[100] = mc[10]
        auc = ({"plain_entropy": 0.801 + j, "mc_entropy": 0.874, "mc_mutual_information": 0.902}
               if helps else {"plain_entropy": 0.801 + j, "mc_entropy": 0.523,
                              "mc_mutual_information": 0.511})
        runs.append({"plain": plain, "mc": mc, "auroc": auc, "n_max": 100,
                     "ood_source": mc_dropout.SHUFFLED})
    return runs


def test_mc_dropout_verdict_flips_with_the_measurements():
    a = mc_dropout.verdict(_mc_runs(True))
    assert outcomes(a) == [SUPPORTED] * 4 and a.head.startswith("Yes for accuracy, yes for")
    assert len(sources(a)[0]) == 4 and not sources(a)[1]
    b = mc_dropout.verdict(_mc_runs(False))
    assert outcomes(b) == [REFUTED] * 4 and not sources(b)[0]


def _momentum_runs(quad_worse: bool, net_worse: bool):
    def q(overshoot, crossings, at, dist=1.0):
        return {"overshoot": overshoot, "crossings": crossings, "converged_at_step": at,
                "max_distance_ratio": dist}
    runs = []
    for j in JITTER:
        quad = {"0.9": q(0.53, 7, 247), "0.99999": q(0.99, 95, None) if quad_worse
                else q(0.21, 3, 180)}
        hi = 2.3 + j if net_worse else 0.121 + j
        runs.append({"quadratic": quad, "quadratic_steps": 3000, "net_epochs": 12,
                     "data": "mydata.csv",
                     "net": {"0.9": {"status": "ok", "final_train_loss": 0.162 + 2 * j,
                                     "test_accuracy": 0.94},
                             "0.99999": {"status": "ok", "final_train_loss": hi,
                                         "test_accuracy": 0.11}}})
    return runs


def test_momentum_verdict_flips_with_the_measurements():
    a = momentum.verdict(_momentum_runs(True, True))
    assert outcomes(a) == [SUPPORTED, SUPPORTED, REFUTED]
    assert a.head == "It overshoots and oscillates instead of converging"
    assert "mydata.csv" in a.verdicts[1].claim
    assert "000 answer 5 (book)" in sources(a)[0]
    b = momentum.verdict(_momentum_runs(False, False))
    assert outcomes(b)[:2] == [REFUTED, REFUTED] and "000 answer 5 (book)" in sources(b)[1]


def _sparsity_runs(book_way: bool):
    runs = []
    for j in JITTER:
        def pt(s, j=j):
            return {"sparsity": s + j, "accuracy": 0.93}
        sparsest = {"zeroing small weights": pt(0.9), "zeroing + 1 epoch fine-tuning": pt(0.95),
                    "L1 then zeroing": pt(0.62), "gradual pruning": pt(0.9),
                    "FTRL with L1": pt(0.85)}
        l1 = [{"l1": 3e-3, "exact_zeros": 0.0, "near_zero": 0.62 + j}]
        dropout = {"sparsity": 0.0, "dense_near_zero": 0.012}
        if not book_way:   # pruning wrecks accuracy, L1 alone gives exact zeros, dropout sparsifies
            sparsest.update({"zeroing small weights": pt(0.5), "zeroing + 1 epoch fine-tuning": None,
                             "gradual pruning": None, "FTRL with L1": pt(0.3)})
            l1 = [{"l1": 3e-3, "exact_zeros": 0.213 + j, "near_zero": 0.0 + abs(j)}]
            dropout = {"sparsity": 0.0456 + j, "dense_near_zero": 0.012}
        runs.append({"sparsest_points": sparsest, "l1": l1, "dropout": dropout,
                     "dense_sparsity": 0.0, "kernel_weights": 89400})
    return runs


def test_sparsity_verdict_flips_with_the_measurements():
    dropout_claims = ["002 answer 6 (dropout makes a model sparse)",
                      "001 answer 6 (learner: ReLU, L1, dropout)"]
    a = sparsity.verdict(_sparsity_runs(True))
    assert outcomes(a) == [SUPPORTED, SUPPORTED, SUPPORTED, SUPPORTED, REFUTED, REFUTED]
    assert a.head.startswith("Dropout is not one of them")
    assert "000 answer 6 (book)" in sources(a)[0] and set(dropout_claims) <= set(sources(a)[1])
    b = sparsity.verdict(_sparsity_runs(False))
    assert outcomes(b) == [REFUTED, REFUTED, REFUTED, REFUTED, SUPPORTED, SUPPORTED]
    assert b.head.startswith("Dropout does sparsify here")
    assert dropout_claims + ["002 answer 6 (L1 drives weights to exactly zero)"] == sources(b)[0]


def _selu_runs(normalizes: bool, selu_closer: bool):
    ok = {"self_normalizes": True, "settles_at_layer": 1}
    off = {"self_normalizes": False, "settles_at_layer": None}
    runs = []
    for j in JITTER:
        depth = {name: dict(off) for name in selu.CONDITIONS}
        depth["alpha dropout 0.2"] = dict(ok)
        depth["SELU, LeCun, standardized"] = dict(ok if normalizes else off)
        near, far = 0.05 + j, 0.4 + 2 * j
        s, r = (near, far) if selu_closer else (far, near)
        trained = {f"{a} lr={lr:g}": {"mean_abs_mean_at_init": s if a == "selu" else r,
                                      "dead_fraction": (0.3 + j if selu_closer else 0.0)
                                      if a == "relu" else 0.0,
                                      "constant_fraction": 0.0 if selu_closer else 0.3 + j}
                   for a in ("relu", "selu") for lr in (1e-3, 1e-2)}
        runs.append({"depth": depth, "trained": trained})
    return runs


def test_selu_verdict_flips_with_the_measurements():
    a = selu.verdict(_selu_runs(True, True))
    assert outcomes(a) == [SUPPORTED] * 4 and a.head == "SELU's advantages hold"
    assert "000 answer 3 (book)" in sources(a)[0] and any(r.startswith("002") for r in sources(a)[1])
    b = selu.verdict(_selu_runs(False, False))
    assert outcomes(b)[:3] == [REFUTED] * 3 and b.head == "SELU's advantages hold only in part"
    assert "000 answer 3 (book)" in sources(b)[1] and any(c.startswith("002") for c in sources(b)[0])
