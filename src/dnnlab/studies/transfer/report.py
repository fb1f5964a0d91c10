"""report.html of the transfer study and its terminal summary, from the results and stage records."""


from pathlib import Path
from typing import Any

from dnnlab.report import Page, learning_curves, line_plot
from dnnlab.studies.common import book_rows, book_verdict, pm
from dnnlab.studies.transfer.answers import bn_verdict, dropout_verdict, first_epoch_accuracy, speed_verdict
from dnnlab.studies.transfer.plan import BOOK, BOOK_SECONDS, HEAD_LRS, HEAD_OPTIMIZERS, LABELS, VARIANTS_04


def _param(key: str, value: Any) -> str:
    return f"{key} = {value:.3g}" if isinstance(value, float) else f"{key} = {value}"


def _first_seed_curves(runs: dict[str, list[dict[str, Any]]], keys) -> dict[str, dict]:
    return {LABELS[k].split(": ", 1)[1]: runs[k][0]["history"] for k in keys}


def _transfer_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for k in ("frozen5", "frozen5_cached", "frozen4", "unfreeze2", "unfreeze_all", "scratch"):
        e = r[k]
        rows.append({"experiment": LABELS[k].split(": ", 1)[1], "book (%)": BOOK[k],
                     "ours (%)": pm(e["test_accuracy_mean"], e["test_accuracy_std"]),
                     "per seed (%)": " ".join(f"{v * 100:.2f}" for v in e["test_accuracy_values"]),
                     "optimizer, lr": f"{e['optimizer']} {e['lr']:.3g}",
                     "trainable params": e.get("trainable_parameters"),
                     "epochs": e["epochs_mean"], "train s": e["train_seconds"]})
    return rows


def write_report(out: Path, results: dict[str, Any], part1: dict, part2: dict) -> Path:
    """``out/report.html``: the book beside ours, then each question with its evidence."""
    r, meta = results, results["meta"]
    page = Page("Transfer learning on MNIST: digits 0-4, then 5-9 from 100 images each",
                f"Hands-On ML ch. 11, exercises 8-9, measured over {len(meta['seeds'])} seeds "
                f"on {meta['device']} in {meta['wall_seconds'] / 60:.1f} min"
                f"{' (quick mode: shortened, for CI)' if meta['quick'] else ''}")
    verdict, ok = book_verdict(r, BOOK, LABELS)
    page.verdict(verdict, ok)
    page.table(book_rows(r, BOOK, LABELS), formats={"book (%)": ".2f", "ours − book (pts)": "+.2f",
                                                    "train s (mean)": ".2f"})
    page.paragraph("Protocol: pixels / 255; validation = the first 5,000 training images and test "
                   "= the official test set, both restricted to the digits in play; early stopping "
                   "on validation loss with the best weights restored. Mean ± sample std over "
                   "seeds; each seed changes the initialization, the batch order and, for 5-9, the "
                   "images drawn and the pretrained model reused. Training seconds are the sum of "
                   "the epochs' times (steps and validation, no disk I/O).")

    runs1, search = part1["runs"], part1["search"]
    page.heading("Digits 0-4")
    page.heading("Cross-validated tuning", 3)
    page.paragraph(f"{meta['plan']['trials']} Optuna trials (TPE sampler, median pruning after each "
                   f"fold), each scored by {meta['plan']['folds']}-fold stratified cross-validation "
                   f"on the training images. Best: "
                   f"{', '.join(_param(k, v) for k, v in search['best_params'].items())}"
                   f", with cross-validated accuracy {search['best_value'] * 100:.2f} %.")
    page.table([{k: v for k, v in row.items() if k != "worker"} for row in search['rows']],
               formats={"cv_accuracy": ".4f", "seconds": ".1f"})
    page.heading("Batch normalization: faster convergence? a better model?", 3)
    page.figure(learning_curves(_first_seed_curves(runs1, VARIANTS_04),
                                title="Learning curves, digits 0-4 (first seed)"),
                "dashed: training, solid: validation")
    page.table([{"variant": LABELS[k].split(": ", 1)[1],
                 "best epoch (mean)": r[k]["best_epoch_mean"], "epochs run": r[k]["epochs_mean"],
                 "s / epoch": r[k]["train_seconds"] / r[k]["epochs_mean"],
                 "val acc after epoch 1 (%)": first_epoch_accuracy(runs1[k]) * 100,
                 "test acc (%)": pm(r[k]["test_accuracy_mean"], r[k]["test_accuracy_std"])}
                for k in VARIANTS_04], formats={"best epoch (mean)": ".1f", "epochs run": ".1f",
                                                "s / epoch": ".2f", "val acc after epoch 1 (%)": ".2f"})
    page.verdict(*bn_verdict(r, runs1))
    page.heading("Overfitting and dropout", 3)
    page.table([{"variant": LABELS[k].split(": ", 1)[1],
                 "train acc (%)": r[k]["train_accuracy_mean"] * 100,
                 "valid acc (%)": r[k]["valid_accuracy_mean"] * 100,
                 "gap (pts)": (r[k]["train_accuracy_mean"] - r[k]["valid_accuracy_mean"]) * 100,
                 "test acc (%)": r[k]["test_accuracy_mean"] * 100} for k in VARIANTS_04],
               formats={c: ".2f" for c in ("train acc (%)", "valid acc (%)", "gap (pts)",
                                           "test acc (%)")})
    page.paragraph("Accuracies measured after training in inference mode (dropout off), so the "
                   "training accuracy is comparable with and without dropout.")
    page.verdict(*dropout_verdict(r))

    page.heading("Digits 5-9 from 100 images per digit")
    page.paragraph(f"The hidden layers come from {meta['pretrained']} (the model of the same "
                   "seed, loaded from its model.safetensors), copied into a new network with a "
                   "fresh 5-way softmax head; frozen layers keep batch norm in inference mode. "
                   "Unfreezing continues from the 4-layer model at "
                   f"{r['unfreeze2']['lr'] / r['frozen4']['lr']:g} x the head's rate (searched on "
                   "the validation images); batch norm stays in inference mode there too. The "
                   "pretrained model is "
                   f"{'unchanged' if r['frozen5']['pretrained_unchanged'] else 'CHANGED'} after "
                   "training the new ones.")
    choice = r["frozen5"]["pretrained_choice"]
    if len(choice) > 1:
        page.table([{"pretrained 0-4 model": k, "best validation loss of a frozen-5 head": v,
                     "chosen": "yes" if k == meta["pretrained"] else ""} for k, v in choice.items()],
                   formats={"best validation loss of a frozen-5 head": ".4f"})
    page.table(_transfer_rows(r), formats={"book (%)": ".2f", "epochs": ".1f", "train s": ".2f"})
    page.verdict(*speed_verdict(r))
    curves = {LABELS[k].split(": ", 1)[1]: part2["runs"][k][0]["history"]
              for k in ("frozen5", "frozen4", "unfreeze2", "unfreeze_all", "scratch")}
    page.figure(learning_curves(curves, metrics=("accuracy",),
                                title="Learning curves, digits 5-9 (first seed)"),
                "dashed: training, solid: validation (30 images per digit); the unfreezing "
                "stages start from the previous stage's weights")
    page.table([{"search": name, "optimizer": g["optimizer"], "lr": g["lr"],
                 "best validation loss": g["val_loss"]}
                for name, which in (("fine-tuning rate", "finetune"), ("from scratch", "scratch"))
                for g in part2["searches"][which]["grid"]],
               formats={"lr": ".3g", "best validation loss": ".4f"})
    for which, title in (("head5", "5 frozen layers"), ("head4", "4 frozen layers")):
        grid = part2["searches"][which]["grid"]
        ys = {opt: [g["val_loss"] for g in grid if g["optimizer"] == opt] for opt in HEAD_OPTIMIZERS}
        page.figure(line_plot(HEAD_LRS, ys, xlabel="learning rate", ylabel="best validation loss",
                              title=f"Head search on cached features ({title})", logx=True),
                    "each point: the head trained to early stopping on the first seed's cached "
                    "features; the lowest validation loss picks the optimizer and rate")
    return page.save(Path(out) / "report.html")


def format_summary(results: dict[str, Any]) -> str:
    """The book-vs-ours table as text, for the terminal."""
    lines = [f"{'experiment':44s} {'book':>7s} {'ours (mean ± std)':>18s} {'train s':>8s}"]
    for key, label in LABELS.items():
        r = results[key]
        lines.append(f"{label:44s} {BOOK[key]:7.2f} "
                     f"{pm(r['test_accuracy_mean'], r['test_accuracy_std']):>18s} "
                     f"{r['train_seconds']:8.2f}")
    c = results["frozen5_cached"]
    book5, book_cached = BOOK_SECONDS["frozen5"], BOOK_SECONDS["frozen5_cached"]
    lines.append(f"caching speedup: {c['speedup']:.1f}x (book: {book5} s -> {book_cached} s, "
                 f"{book5 / book_cached:.1f}x)")
    return "\n".join(lines)

