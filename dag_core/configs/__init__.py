"""The settings of every component, importable without torch (for checking params early).

One dataclass per component, each checked on construction (:mod:`dag_core.validation`), each
with the embedded default's params.yaml values as its defaults (a test compares them): the
guidance (:mod:`~dag_core.configs.guidance`), the depth heads (:mod:`~dag_core.configs.heads`),
the depth prior (:mod:`~dag_core.configs.prior`), the downstream nets
(:mod:`~dag_core.configs.downstream`), the base model's training
(:mod:`~dag_core.configs.backbone`), the runtime (:mod:`~dag_core.configs.runtime`), a synthesis
spec (:mod:`~dag_core.configs.synthesis`) and a sweep's design (:mod:`~dag_core.configs.sweep`).
The modules that use them re-export them under their old names
(``dag_core.guidance.GuidanceConfig``). This package's ``__init__`` imports none of them, so a
stage depends only on the settings it reads.
"""
