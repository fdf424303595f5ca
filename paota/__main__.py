"""``python -m paota``: the same as the ``paota`` command."""

from paota.cli import main

raise SystemExit(main())
