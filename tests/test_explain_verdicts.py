"""Explain topics' verdicts are pure functions of the measurements: fed numbers pointing one way,
then the other, the verdict and its confirms/refutes lists flip (both branches reached)."""

import copy

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


def _selu_numbers(normalizes: bool, selu_closer: bool):
    ok = {"mean": [0.0] * 30, "std": [1.0] * 30, "settles_at_layer": 1, "self_normalizes": True,
          "last_mean": 0.0, "last_std": 1.0}
    off = {"mean": [0.5] * 30, "std": [2.0] * 30, "settles_at_layer": None,
           "self_normalizes": False, "last_mean": 0.5, "last_std": 2.0}
    depth = {name: copy.deepcopy(off) for name in selu.CONDITIONS}
    depth["alpha dropout 0.2"] = copy.deepcopy(ok)
    depth["SELU, LeCun, standardized"] = copy.deepcopy(ok if normalizes else off)
    near, far = {"mean_abs_mean_at_init": 0.05, "mean_abs_mean": 0.1}, \
        {"mean_abs_mean_at_init": 0.4, "mean_abs_mean": 0.6}
    s, r = (near, far) if selu_closer else (far, near)
    trained = {f"{a} lr={lr:g}": {**(s if a == "selu" else r), "dead_fraction": 0.3 if a == "relu" else 0.0,
                                  "constant_fraction": 0.0}
               for a in ("relu", "selu") for lr in (1e-3, 1e-2)}
    return {"depth": depth, "trained": trained}


def test_selu_verdict_flips_with_the_measurements():
    text, confirms, refutes = selu.verdict(_selu_numbers(True, True))
    assert text.startswith("SELU's advantages hold:")
    assert "000 answer 3 (book)" in confirms and any(r.startswith("002") for r in refutes)
    text, confirms, refutes = selu.verdict(_selu_numbers(False, False))
    assert text.startswith("SELU's advantages hold only in part")
    assert "000 answer 3 (book)" in refutes and any(c.startswith("002") for c in confirms)


def _symmetry_numbers(max_diff: float, equal_acc: float):
    runs = {"independent He": {"test_accuracy": 0.95},
            "equal: constant 0.01": {"test_accuracy": equal_acc},
            "equal: one He draw copied": {"test_accuracy": equal_acc}}
    return {"runs": runs, "one_neuron_per_layer_test_accuracy": 0.3,
            "equal_max_neuron_diff_after": max_diff, "independent_min_neuron_diff_after": 0.5,
            "collapsed_vs_wide_accuracy_gap": 0.0}


def test_symmetry_verdict_flips_with_the_measurements():
    text, confirms, refutes = symmetry.verdict(_symmetry_numbers(0.0, 0.3))
    assert text.startswith("No:") and "000 answer 1 (book)" in confirms
    text, confirms, refutes = symmetry.verdict(_symmetry_numbers(0.4, 0.94))
    assert text.startswith("Not settled here") and "000 answer 1 (book)" in refutes
    assert confirms == ["002 answer 1 (equal weights drawn with He init are fine)"]


def _bias_numbers(t_const: float, t_random: float):
    """Planted comparisons against zeros: beyond noise where |t| >= 3 (p is what 5 seeds a side
    would give, roughly)."""
    acc = {v: {"mean": 0.95, "std": 0.002} for v in bias_init.VARIANTS}

    def vs(t):
        return {"difference": 0.001 * t, "t": t, "p": 0.01 if abs(t) >= 3 else 0.4,
                "beyond_noise": abs(t) >= 3, "test": "paired"}
    return {"seeds": 5, "accuracy": acc,
            "vs_zeros": {"constant 1": vs(t_const), "random (like weights)": vs(t_random)}}


def test_bias_init_verdict_flips_with_the_measurements():
    text, confirms, refutes = bias_init.verdict(_bias_numbers(0.5, -0.3))
    assert text.startswith("Yes: the bias start makes no difference")
    assert "000 answer 2 (book)" in confirms and not refutes
    text, confirms, refutes = bias_init.verdict(_bias_numbers(3.0, 0.1))
    assert text.startswith("Not quite: constant 1 biases beat zeros")
    assert "000 answer 2 (book)" not in confirms and "002 answer 2 (zero biases are fine)" in refutes
    text, _, refutes = bias_init.verdict(_bias_numbers(-4.0, 0.1))
    assert "did worse than zeros" in text and any(r.startswith("004") for r in refutes)


def _activations_numbers(book_way: bool):
    acc = {"sigmoid": 0.931, "tanh": 0.962, "relu": 0.965, "leaky_relu": 0.966, "prelu": 0.964,
           "elu": 0.968, "selu": 0.969, "gelu": 0.965, "swish": 0.963}
    if not book_way:   # the logistic wins, SELU, ELU and tanh fall far behind
        acc.update(sigmoid=0.985, selu=0.90, elu=0.91, tanh=0.89)
    hidden = {a: {"test_accuracy": v, "seconds_per_epoch": 0.5 + 0.01 * i}
              for i, (a, v) in enumerate(acc.items())}
    ranges = {"tanh": {"min": -1.0, "max": 1.0, "in_range": True},
              "sigmoid": {"min": 1.2e-9, "max": 0.9999999, "in_range": True,
                          "exactly_0_or_1": 0.004},
              "softmax": {"min": 0.0, "max": 1.0, "max_abs_row_sum_minus_1": 2.4e-7,
                          "in_range": True},
              "softplus": {"min": 3.1e-9, "max": 24.5, "in_range": True, "exactly_0": 0.0,
                           "min_logit": -19.6}}
    if not book_way:   # softplus underflows to 0, softmax rows do not sum to 1
        ranges["softplus"].update(min=0.0, exactly_0=0.0123, min_logit=-112.0)
        ranges["softmax"].update(max_abs_row_sum_minus_1=3.0e-3, max=1.002, in_range=False)
    return {"hidden": hidden, "output_ranges": ranges}


def test_activations_verdict_flips_with_the_measurements():
    n = _activations_numbers(True)
    text, confirms, refutes = activations.verdict(n)
    assert "within 1% of the best: selu, elu, leaky_relu, relu, gelu, prelu, swish, tanh;" in text
    assert f"sigmoid {n['hidden']['sigmoid']['test_accuracy']:.1%}" in text
    assert "(all positive)" in text and "outside its range" not in text
    assert {"000 answer 4 (book: SELU is a good default)",
            "004 answer 4 (first edition: ELU is a good default)",
            "000 answer 4 (book: logistic is rarely used in hidden layers)",
            "002 answer 4 (tanh is suitable for hidden layers)",
            "001 activations card (softplus for outputs that must be positive)"} <= set(confirms)
    assert any(c.startswith("000 answer 4 (book: tanh for outputs") for c in confirms)
    assert not refutes

    n = _activations_numbers(False)
    text, confirms, refutes = activations.verdict(n)
    assert "within 1% of the best: sigmoid;" in text and "on the sigmoid net's" in text
    assert f"selu {n['hidden']['selu']['test_accuracy']:.1%}" in text
    assert "1.23% underflow to exactly 0 in float32: logits down to -112" in text
    assert f"{n['output_ranges']['softmax']['max_abs_row_sum_minus_1']:.1e}" in text
    assert "outside its range: softmax" in text
    assert {"000 answer 4 (book: SELU is a good default)",
            "004 answer 4 (first edition: ELU is a good default)",
            "000 answer 4 (book: logistic is rarely used in hidden layers)",
            "002 answer 4 (tanh is suitable for hidden layers)",
            "001 activations card (softplus outputs are positive: 1.23% were exactly 0 in "
            "float32)"} <= set(refutes)
    assert any(r.startswith("000 answer 4 (book: tanh for outputs") for r in refutes)
    assert not confirms

    n = _activations_numbers(True)   # quick mode trains four: no claim about the others
    n["hidden"] = {a: n["hidden"][a] for a in ("sigmoid", "tanh", "relu", "leaky_relu")}
    text, confirms, refutes = activations.verdict(n)
    assert text.startswith("Hidden layers (4 activations,")
    assert not any("SELU" in c or "ELU" in c for c in confirms + refutes)


def _dropout_cost_numbers(book_way: bool):
    def row(target, epochs, seconds, epoch, step, inference):
        return {"target_val_loss": target, "epochs_ratio": epochs, "seconds_ratio": seconds,
                "epoch_seconds_ratio": epoch, "step_seconds_ratio": step,
                "inference_ratio": inference}
    if book_way:   # slower to converge, same inference, MC ~N times slower
        per_rate = {0.2: row(0.1234, 1.5, 1.62, 1.04, 1.07, 1.01),
                    0.5: row(0.1567, 2.4, 2.51, 1.06, 1.09, 0.99)}
        mc = {1: {"slowdown": 1.1, "per_pass": 1.1, "accuracy": 0.951},
              10: {"slowdown": 11.3, "per_pass": 1.13, "accuracy": 0.9705}}
    else:          # faster to converge, slower and random inference, MC barely costs more
        per_rate = {0.2: row(0.1234, 0.8, 0.85, 1.72, 1.8, 1.61),
                    0.5: row(0.1567, 0.9, 0.93, 1.9, 2.0, 1.7)}
        mc = {1: {"slowdown": 1.0, "per_pass": 1.0, "accuracy": 0.951},
              10: {"slowdown": 2.2, "per_pass": 0.22, "accuracy": 0.9605}}
    return {"per_rate": per_rate, "mc": mc, "plain": {"accuracy": 0.9651},
            "eval_deterministic": book_way}


def test_dropout_cost_verdict_flips_with_the_measurements():
    n = _dropout_cost_numbers(True)
    text, confirms, refutes = dropout_cost.verdict(n)
    assert text.startswith("Yes, through slower convergence: rate 0.2 needs 1.5x the epochs and "
                           "1.6x the wall time of no dropout to reach validation loss 0.123")
    assert "while an epoch costs only up to 1.06x (a training step 1.09x)" in text
    assert "fits rate 0.2 and 0.5;" in text and "eval mode costs 0.99-1.01x" in text
    assert ", deterministic)" in text and "N=10 costs 11.3x plain inference" in text
    assert "+0.54 points of test accuracy (97.05% vs 96.51%)" in text
    assert "000 answer 7 (book: slower training, no inference cost, MC Dropout ~N times slower)" \
        in confirms and "003 answer 7 (book)" in confirms
    assert refutes == ["001 answer 7 (learner: dropout speeds up training)"]

    n = _dropout_cost_numbers(False)
    text, confirms, refutes = dropout_cost.verdict(n)
    assert text.startswith("Not here: rate 0.2 needs 0.8x the epochs and 0.8x the wall time")
    assert "though an epoch itself costs up to 1.90x (a training step 2.00x)" in text
    assert "fits neither rate" in text and "eval mode costs 1.61-1.70x" in text
    assert "NOT deterministic" in text and "N=10 costs 2.2x plain inference" in text
    assert f"{100 * (n['mc'][10]['accuracy'] - n['plain']['accuracy']):+.2f} points" in text
    assert confirms == ["001 answer 7 (learner: dropout speeds up training)"]
    assert "000 answer 7 (book: slower training, no inference cost, MC Dropout ~N times slower)" \
        in refutes and "004 answer 7 (slower convergence, no impact on inference)" in refutes


def _init_variance_numbers(book_way: bool):
    def at(fwd: float, back: float, slope: float = 0.5):
        f, b = init_variance.classify(fwd), init_variance.classify(back)
        return {"at_init": {"forward_ratio": fwd, "backward_ratio": back, "forward": f,
                            "backward": b, "preserved": f == b == "preserved",
                            "mean_slope": slope}, "train_status": "ok"}
    results = {"sigmoid / N(0, 1)": at(0.9, 3.2e-9, 0.12), "sigmoid / Glorot": at(0.5, 2.1e-12),
               "sigmoid / He": at(0.7, 4.4e-10),
               "tanh / N(0, 1)": at(1.0, 5.6e4, 0.08), "tanh / Glorot": at(0.31, 2.3),
               "tanh / He": at(1.1, 40.0),
               "relu / N(0, 1)": at(3.4e19, 2.2e17), "relu / Glorot": at(2.9e-5, 1.5e-4),
               "relu / He": at(0.87, 1.9)}
    diverged = ["relu / N(0, 1)"]
    if not book_way:   # He+ReLU loses the signal, N(0, 1)+tanh keeps it
        results["relu / He"] = at(1.2e-6, 3.0e-7)
        results["tanh / N(0, 1)"] = at(0.8, 1.7, 0.6)
        diverged = []
    return {"results": results, "sgd_steps": 20, "diverged_after_steps": diverged}


def test_init_variance_verdict_flips_with_the_measurements():
    cards = ["001 Glorot/He card (book's answer: keep the output std close to the input std)",
             "001 Glorot/He card (learner: they fix unstable, vanishing or exploding gradients)"]
    n = _init_variance_numbers(True)
    text, confirms, refutes = init_variance.verdict(n)
    assert text.startswith("Yes, they keep the signal's scale from layer to layer: over 30 layers")
    assert "He+relu x8.7e-01 / x1.9e+00 (preserved)" in text
    assert "relu x3.4e+19 / x2.2e+17 (forward exploding, backward exploding)" in text
    assert "so ReLU needs He's factor 2" in text and "sigmoid's gradients vanish" in text
    assert "tanh units are saturated (mean slope 8% of its maximum)" in text
    assert "20 SGD steps diverged for: relu / N(0, 1)." in text
    assert confirms == cards and not refutes

    n = _init_variance_numbers(False)
    text, confirms, refutes = init_variance.verdict(n)
    assert text.startswith("Only partly, in this run (He+relu loses the signal's scale; N(0, 1) "
                           "keeps it too with tanh): over 30 layers")
    assert "He+relu x1.2e-06 / x3.0e-07 (forward vanishing, backward vanishing)" in text
    assert "tanh x8.0e-01 / x1.7e+00 (preserved)" in text
    assert "needs He's factor 2" not in text and "tanh units are saturated" not in text
    assert "20 SGD steps diverged for: none." in text
    assert refutes == cards and not confirms


def _mc_dropout_numbers(helps: bool):
    def row(acc, ece, nll, h, h_ood):
        return {"accuracy": acc, "ece": ece, "nll": nll, "entropy": h, "entropy_ood": h_ood}
    plain = row(0.9612, 0.0211, 0.1402, 0.081, 0.412)
    if helps:
        mc = {1: row(0.9521, 0.0302, 0.1711, 0.09, 0.45), 10: row(0.9661, 0.0104, 0.1223, 0.14, 0.81),
              100: row(0.9668, 0.0087, 0.1189, 0.15, 0.83)}
        auc = {"plain_entropy": 0.801, "mc_entropy": 0.874, "mc_mutual_information": 0.902}
        stages, better = {6: {}, 12: {}, 24: {}}, [12, 24]
    else:
        mc = {1: row(0.9403, 0.0402, 0.2111, 0.09, 0.10), 10: row(0.9551, 0.0333, 0.1622, 0.12, 0.13),
              100: row(0.9587, 0.0312, 0.1598, 0.12, 0.13)}
        auc = {"plain_entropy": 0.801, "mc_entropy": 0.523, "mc_mutual_information": 0.511}
        stages, better = {6: {}, 12: {}, 24: {}}, []
    return {"plain": plain, "mc": mc, "auroc": auc, "n_max": 100,
            "n_to_level": mc_dropout.n_to_level(mc), "stages": stages,
            "mc_better_calibrated_at_epochs": better, "ood_images": 5000,
            "ood_source": mc_dropout.SHUFFLED}


def test_mc_dropout_verdict_flips_with_the_measurements():
    n = _mc_dropout_numbers(True)
    text, confirms, refutes = mc_dropout.verdict(n)
    assert text.startswith("Yes for accuracy, yes for calibration here: with N=100 passes MC "
                           "Dropout scores 96.68% vs 96.12% plain (+0.56 points; one pass 95.21%, "
                           "N=10 already within 0.1 point of N=100)")
    assert "ECE 0.009 vs 0.021 (NLL 0.119 vs 0.140" in text
    assert "lower ECE at epochs [12, 24] of [6, 12, 24]" in text
    assert f"on 5000 {mc_dropout.SHUFFLED} its mean predictive entropy is 5.5x" in text
    assert "AUROC 0.874 by entropy and 0.902 by mutual information vs 0.801" in text
    assert len(confirms) == 4 and not refutes

    n = _mc_dropout_numbers(False)
    text, confirms, refutes = mc_dropout.verdict(n)
    assert text.startswith("No for accuracy, no for calibration here: with N=100 passes MC "
                           "Dropout scores 95.87% vs 96.12% plain (-0.25 points; one pass 94.03%, "
                           "still moving at N=100)")
    assert "lower ECE at epochs none of [6, 12, 24]" in text
    assert f"{n['mc'][100]['ece']:.3f} vs {n['plain']['ece']:.3f}" in text
    assert "entropy is 1.1x the in-distribution one (0.13 vs 0.12 nats; plain 5.1x)" in text
    assert not confirms and refutes == [
        "000 answer 7 (book: 10 or more MC passes give better predictions, judged by test NLL)",
        "002 exercise 8e (better accuracy with MC Dropout, without retraining)",
        "002 answer 7 (MC Dropout improves model calibration)",
        "002 answer 7 (MC Dropout estimates uncertainty)"]


def _momentum_numbers(quad_worse: bool, net_worse: bool):
    def q(overshoot, crossings, at, ratio, dist):
        return {"overshoot": overshoot, "crossings": crossings, "converged_at_step": at,
                "final_loss_ratio": ratio, "max_distance_ratio": dist}
    def net(up, final, low, acc, status="ok"):
        return {"status": status, "epochs_loss_went_up": up, "final_train_loss": final,
                "min_train_loss": low, "test_accuracy": acc}
    quad = {"0.9": q(0.53, 7, 247, 8.1e-9, 1.0), "0.99999": q(0.99, 95, None, 0.71, 1.0)}
    if not quad_worse:
        quad["0.99999"] = q(0.21, 3, 180, 3.0e-9, 1.0)
    nets = {"0.9": net(0, 0.162, 0.162, 0.942), "0.99999": net(6, 2.304, 0.611, 0.113)}
    if not net_worse:
        nets["0.99999"] = net(1, 0.121, 0.118, 0.951)
    return {"quadratic": quad, "net": nets, "quadratic_steps": 3000, "net_epochs": 12,
            "data": "mydata.csv"}


def test_momentum_verdict_flips_with_the_measurements():
    book = ["000 answer 5 (book)", "003 answer 5 (book)", "004 answer 5 (first edition)",
            "002 answer 5 (oscillations, overshooting, slow convergence)"]
    text, confirms, refutes = momentum.verdict(_momentum_numbers(True, True))
    assert text.startswith("It overshoots and oscillates instead of converging: on f = ")
    assert "on a 3x100 net on mydata.csv (SGD" in text and "MNIST" not in text   # the run's data
    assert "0.9 overshoots the minimum by 53% of the start distance, crosses it 7 times and " \
        "converges in 247 steps" in text
    assert "0.99999 overshoots by 99%, crosses it 95 times and has not converged after 3000 " \
        "steps (f still 7.1e-01 x start)" in text
    assert "12 epochs) the training loss went up in 0 of 11 epochs with 0.9 (final 0.162, test " \
        "accuracy 94.2%) and in 6 with 0.99999 (final 2.304, lowest 0.611, test accuracy 11.3%)" \
        in text
    assert confirms == book
    assert refutes == ["001 answer 5 (learner: the sum of past gradients makes the rate of change "
                       "explode)"]

    text, confirms, refutes = momentum.verdict(_momentum_numbers(False, False))
    assert text.startswith("Not here: 0.99999 is no worse than 0.9")
    assert "0.99999 overshoots by 21%, crosses it 3 times and converges in 180 steps" in text
    assert "in 1 with 0.99999 (final 0.121, lowest 0.118, test accuracy 95.1%)" in text
    assert not confirms and refutes == book + [
        "001 answer 5 (learner: the sum of past gradients makes the rate of change explode)"]
    text, confirms, _ = momentum.verdict(_momentum_numbers(True, False))
    assert text.startswith("Mixed result (0.99999 is worse than 0.9 on the quadratic, not on the net)")
    assert not confirms
    n = _momentum_numbers(False, True)
    n["quadratic"]["0.99999"]["max_distance_ratio"] = 2.5   # it flew off: the learner's "explode"
    text, confirms, _ = momentum.verdict(n)
    assert text.startswith("Mixed result (0.99999 is worse than 0.9 on the net, not on the quadratic)")
    assert confirms == ["001 answer 5 (learner: the sum of past gradients makes the rate of change "
                        "explode)"]


def _sparsity_numbers(book_way: bool):
    def pt(s, acc=0.93):
        return {"sparsity": s, "accuracy": acc}
    sparsest = {"zeroing small weights": pt(0.9), "zeroing + 1 epoch fine-tuning": pt(0.95),
                "L1 then zeroing": pt(0.62), "gradual pruning": pt(0.9), "FTRL with L1": pt(0.85)}
    l1 = [{"l1": 1e-3, "exact_zeros": 0.0, "near_zero": 0.41},
          {"l1": 3e-3, "exact_zeros": 0.0, "near_zero": 0.62}]
    dropout = {"sparsity": 0.0, "dense_near_zero": 0.012}
    if not book_way:   # pruning wrecks accuracy, L1 alone gives exact zeros, dropout sparsifies
        sparsest.update({"zeroing small weights": pt(0.5), "zeroing + 1 epoch fine-tuning": None,
                         "L1 then zeroing": pt(0.1), "gradual pruning": None,
                         "FTRL with L1": pt(0.3)})
        l1[1].update(exact_zeros=0.213)
        dropout.update(sparsity=0.0456)
    return {"dropout": dropout, "l1": l1, "dense_accuracy": 0.9456, "sparsest_points": sparsest}


def test_sparsity_verdict_flips_with_the_measurements():
    book = ["000 answer 6 (book)", "001 answer 6 (book's answer)", "003 answer 6 (book)"]
    dropout_claims = ["002 answer 6 (dropout makes a model sparse)",
                      "001 answer 6 (learner: ReLU, L1, dropout)"]
    text, confirms, refutes = sparsity.verdict(_sparsity_numbers(True))
    assert text.startswith("Dropout is not one of them: after dropout (rate 0.5) 0.00% of the "
                           "weights are exactly zero, and after L1 alone with Adam (l1=0.003) "
                           "0.00% are, though 62% lie within 0.001 of zero (without L1: 1.2%)")
    assert "of the dense 94.6% test accuracy: zeroing small weights 90%, zeroing + 1 epoch " \
        "fine-tuning 95%, L1 then zeroing 62%, gradual pruning 90%, FTRL with L1 85%." in text
    assert confirms == book + ["004 answer 6 (zero tiny weights, L1, FTRL with L1)"]
    assert refutes == dropout_claims

    text, confirms, refutes = sparsity.verdict(_sparsity_numbers(False))
    assert text.startswith("Dropout does sparsify here: after dropout (rate 0.5) 4.56% of the "
                           "weights are exactly zero, and after L1 alone with Adam (l1=0.003) "
                           "21.30% are")
    assert "zeroing + 1 epoch fine-tuning: none" in text and "gradual pruning: none" in text
    assert confirms == dropout_claims + ["002 answer 6 (L1 drives weights to exactly zero)"]
    assert refutes == book + ["004 answer 6 (zero tiny weights, L1, FTRL with L1)"]
