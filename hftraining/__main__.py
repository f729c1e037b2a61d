"""`python -m hftraining ...` is the same as `hftrain ...` (and what torchrun launches)."""

from hftraining.cli import main

raise SystemExit(main())
