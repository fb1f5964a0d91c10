"""The CIFAR-10 study (``dnnlab study cifar10``): the ablation study with the book's protocol.

:mod:`.plan` (the book's network, protocol and figures) and :mod:`.command` (``run`` and the
command line); the stages, answers and report are the ablation study's
(:mod:`dnnlab.studies.ablation`), given the book's figures to stand beside ours.
"""

from dnnlab.studies.ablation import answers, report, stages
from dnnlab.studies.cifar10 import plan
from dnnlab.studies.cifar10.command import HELP, add_arguments, main, run
from dnnlab.studies.study import Study

STUDY = Study(name="cifar10", help=HELP, plan=plan, stages=stages, answers=answers, report=report,
              run=run, add_arguments=add_arguments, main=main)

__all__ = ["HELP", "STUDY", "add_arguments", "main", "run"]
