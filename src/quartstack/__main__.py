"""``python -m quartstack`` is the same as the ``quartstack`` console script."""

from quartstack.cli import main

raise SystemExit(main())
