"""``python -m llmkit``: the command line (see :mod:`llmkit.cli`)."""

from llmkit.cli import main

raise SystemExit(main())
