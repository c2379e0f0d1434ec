"""``python -m dag_core.shards verify DIR...`` (see :func:`dag_core.shards.cli.main`)."""

from dag_core.shards.cli import main

raise SystemExit(main())
