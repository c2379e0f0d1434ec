"""The labeller record: which depth labeller the synthetic pairs should get their labels from.

:mod:`~dag_core.labeller.fitting` (fitting a labeller) and :mod:`~dag_core.labeller.record`
(scoring them all on one exact-depth test split, with CIs, and the features' ceiling); the
record as Markdown is :mod:`dag_core.results.labellers`. Import from here.
"""

from dag_core.configs.labeller import LabellerSpec
from dag_core.labeller.fitting import fit_labeller, fit_steps
from dag_core.labeller.record import CEILING_SEED_BASE, labeller_record, score_labeller

__all__ = [
    "CEILING_SEED_BASE",
    "LabellerSpec",
    "fit_labeller",
    "fit_steps",
    "labeller_record",
    "score_labeller",
]
