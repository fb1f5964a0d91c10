"""The transfer-learning study (``dnnlab study transfer``), on :mod:`dnnlab.studies.engine`.

:mod:`.plan` (the book's figures, search spaces, work sizes), :mod:`.stages` (part 1 on digits
0-4, part 2 on digits 5-9, as two engine stages), :mod:`.answers` (the verdicts), :mod:`.report`
(report.html, the terminal summary), :mod:`.command` (``run`` and the command line).
"""

from dnnlab.studies.study import Study
from dnnlab.studies.transfer import answers, plan, report, stages
from dnnlab.studies.transfer.command import HELP, add_arguments, main, run
from dnnlab.studies.transfer.plan import BOOK, FULL, LABELS, QUICK, Plan
from dnnlab.studies.transfer.stages import train_seeds

STUDY = Study(name="transfer", help=HELP, plan=plan, stages=stages, answers=answers, report=report,
              run=run, add_arguments=add_arguments, main=main)

__all__ = ["BOOK", "FULL", "HELP", "LABELS", "QUICK", "STUDY", "Plan", "add_arguments", "main",
           "run", "train_seeds"]
