"""The stage command line, ``python -m flows.<stage> [--params F] [--serve NAME] [key=value]``.

Every stage module calls :func:`flows.cli.run.main` before its own imports. One job per module:

* :mod:`~flows.cli.parse` — the arguments and the stage's params group: ``params.yaml`` (DVC's
  convention, grouped by stage), a ``--params`` file's partial group over it, then ``key=value``
  overrides (``key.sub=value`` sets one nested key, as ``dvc exp run -S`` does), checked against
  the stage's schema (:func:`flows.schema.base.validate`) BEFORE the flow module — Prefect,
  torch, diffusers — is imported: a bad value costs about a second and prints one line.
* :mod:`~flows.cli.errors` — the one ``error: ...`` line of every failure, naming the value, key
  or path: bad input (:class:`~dag_core.errors.DagError`) and OS errors (a read-only folder, a
  full disk, ``[Errno 27] File too large: <path>``) exit 2; a run that could not finish through
  no fault of its input (:class:`~dag_core.errors.RunInterrupted`: a lost Dask worker, the run's
  Prefect server failing; anything unexpected) exits 1.
* :mod:`~flows.cli.console` — while a flow runs, stderr is reserved for that line: Prefect's log,
  progress bars and library warnings go to stdout; ``DAG_DEBUG=1`` leaves stderr alone and shows
  every traceback.
* :mod:`~flows.cli.signals` — Ctrl-C and SIGTERM, to the process or its whole group, stop a run
  within seconds (:mod:`dag_core.interrupt` stops the work threads too), and a watchdog ends the
  process after :data:`~flows.cli.signals.STOP_GRACE` s whatever it is doing (a second signal
  ends it at once). The run ends with ``error: interrupted; ...`` saying what is finished and how
  to go on (synthesis: ``k/n shards written, rerun the same command to resume``), exit status
  128 + the signal (130 for SIGINT, 143 for SIGTERM).
* :mod:`~flows.cli.run` — run the flow once (the flow checks the same params again as its first
  step, which a deployment run relies on) or, with ``--serve NAME``, serve it as deployment
  ``<flow>/NAME`` whose parameters are what the command line changes from params.yaml. A run with
  no Prefect server configured gets its own (:mod:`flows._server`), which group signals do not
  reach and which dies with the command however it ends, ``kill -9`` included.
"""
