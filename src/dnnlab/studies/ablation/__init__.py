"""The ablation study: the chapter's exercise-8 ladder on any config (``dnnlab study ablation``).

:mod:`.plan` (the ladder and protocol), :mod:`.stages` (the work, declared as engine stages),
:mod:`.answers` (the exercise's questions and the comparison with the baseline), :mod:`.report`
(results.json, report.html), :mod:`.command` (``run`` and the command line).
"""

from dnnlab.studies.ablation import answers, plan, report, stages
from dnnlab.studies.ablation.command import HELP, add_arguments, main, run, run_study
from dnnlab.studies.study import Study

STUDY = Study(name="ablation", help=HELP, plan=plan, stages=stages, answers=answers, report=report,
              run=run, add_arguments=add_arguments, main=main, takes_config=True)

__all__ = ["HELP", "STUDY", "add_arguments", "main", "run", "run_study"]
