"""``dnnlab study transfer``: the book's transfer-learning exercise on MNIST, measured.

Part 1, digits 0-4 (pixels / 255, validation = the first 5,000 training images, test = the
official test set, each restricted to 0-4): the 5 x 100 He/ELU network with Adam and early
stopping (checkpoints every few epochs and the final model in ``OUT/digits04_default/seedN``);
then hyperparameters tuned by k-fold cross-validation (``dnnlab tune``'s machinery), batch norm
added to the tuned network (learning curves compared), and dropout on every layer (train vs
validation accuracy: is the overfitting gone?).

Part 2, digits 5-9 with 100 training images per digit (and 30 per digit for early stopping, as
in the book's solution), drawn anew for each seed: the pretrained hidden layers, **loaded from the
saved model on disk**, reused frozen (BN in inference mode) under a fresh softmax head, and timed;
the same with the frozen layers' outputs cached once and only the head trained (timed again:
the speedup); 4 reused layers instead of 5; the top two then unfrozen and trained further at a
lower rate; then all of them; and the same architecture trained from scratch on the 500 images.
The head's optimizer and learning rate are chosen on the validation images with cached features
(cheap), once for 5 and once for 4 reused layers; the fine-tuning rate (a fraction of the head's)
and the from-scratch network's rate get the same search, run in full. Which 0-4 network to reuse
is chosen the same way (the one whose frozen layers let a head reach the lowest validation loss),
unless ``--pretrained`` names one. Part 1 and part 2 are two stages of
:mod:`dnnlab.studies.engine`: ``--resume`` reuses a finished part from ``OUT/stages``.

Every experiment runs over ``seeds`` seeds (init, batch order, and for part 2 the image draw and
the pretrained model of that seed) and reports mean +- std beside the book's single run. The
search lives in ``OUT/tune/study.db``: a second run into the same ``--out`` reuses its finished
trials (delete that folder to search afresh).
"""


import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnnlab.errors import DnnlabError
from dnnlab.studies import engine
from dnnlab.studies.common import seed_list, write_results
from dnnlab.studies.transfer.plan import BOOK, BOOK_SECONDS, FULL, PRETRAINED, QUICK
from dnnlab.studies.transfer.report import format_summary, write_report
from dnnlab.studies.transfer.stages import STAGES, Setup
from dnnlab.train import resolve_device
from dnnlab.train import threads as thread_policy

SAY = engine.Say("transfer")     # progress lines on stderr, picklable for the engine's workers
HELP = "the MNIST transfer-learning exercise (digits 0-4 -> 5-9), against the book"

# --------------------------------------------------------------------------------- the study

def run(out: str | Path = "runs/transfer", *, quick: bool = False, seeds: int = 3,
        data_dir: str | None = None, device: str = "auto", pretrained: str = "auto",
        threads: int | None = 1, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the whole study into ``out`` (report.html, results.json, runs); return the results.

    ``pretrained`` names the 0-4 variant whose saved models part 2 reuses (default, tuned,
    batchnorm or dropout); "auto" picks the one whose frozen layers give the lowest validation
    loss of a trained head on the first seed's 5-9 images (validation data only). ``threads`` caps
    torch's CPU threads for the study (:func:`dnnlab.train.threads.cap`: the policy chooses below
    it, a fixed ``--threads N`` wins; None: no cap). Progress lines go to ``log`` (default: stderr,
    ``[transfer] ...``, none with ``progress=False``).
    """
    if log is None:
        log = SAY if progress else engine.Say("transfer", False)
    if pretrained not in ("auto", *PRETRAINED):
        raise DnnlabError(f"pretrained = {pretrained!r}; choose auto, {', '.join(PRETRAINED)}")
    t0 = time.perf_counter()
    out = Path(out)
    plan = QUICK if quick else FULL
    seed_ids = seed_list(seeds)
    dev = resolve_device(device)
    setup = Setup(plan=plan, seeds=tuple(seed_ids), out=out, device=device, data_dir=data_dir,
                  pretrained=pretrained, resume=resume, say=log)
    settings = {**dataclasses.asdict(plan), "seeds": seed_ids, "device": device,
                "data_dir": data_dir, "pretrained": pretrained}
    with thread_policy.cap(threads if dev.type == "cpu" else None):
        records = engine.run(STAGES, setup, settings=settings,
                             store=engine.Store(out / "stages", resume, log))
    part1, part2 = records["digits04"], records["digits59"]
    results: dict[str, Any] = {**part1["results"], **part2["results"]}
    wall = time.perf_counter() - t0
    results["meta"] = {"quick": quick, "seeds": seed_ids, "wall_seconds": wall,
                       "device": str(dev), "pretrained": f"digits04_{part2['pretrained']}",
                       "plan": dataclasses.asdict(plan), "book": BOOK, "book_seconds": BOOK_SECONDS}
    write_results(out, results)
    write_report(out, results, part1, part2)
    log(f"done in {wall / 60:.1f} min")
    return results


def add_arguments(parser) -> None:
    parser.add_argument("--pretrained", default="auto", choices=("auto", *PRETRAINED),
                        help="which 0-4 model part 2 reuses (default auto: the one whose frozen "
                        "layers give the lowest validation loss on 5-9)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed study in --out: finished runs are reloaded, "
                        "interrupted ones continue from their last checkpoint, the search resumes")


def main(args) -> int:
    out = args.out or "runs/transfer"
    res = run(out, quick=args.quick, seeds=args.seeds, data_dir=args.data_dir,
              device=args.device or "auto", pretrained=args.pretrained, resume=args.resume)
    print(format_summary(res))
    print(f"report: {Path(out) / 'report.html'}")
    print(f"results: {Path(out) / 'results.json'}")
    return 0


