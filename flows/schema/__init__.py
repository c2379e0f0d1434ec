"""The params schema of every stage, checked before anything starts.

One module per stage (``flows/schema/<stage>.py``, a pydantic model of the flow's parameters:
:class:`~flows.schema.base.StageParams`) and THE check of a stage's params,
:func:`flows.schema.base.validate`. The same check runs twice for a command-line run: in
``python -m flows.<stage>`` before the flow module (Prefect, torch) is imported, so bad input
costs well under a second and prints one ``error:`` line; and first thing inside the flow, so a
deployment run (work pool, served) is checked the same way. Each stage imports only its own
schema (its DVC dependencies stay its own); :mod:`flows.schema.stages` lists them all.
Nothing in this package imports Prefect or torch.
"""
