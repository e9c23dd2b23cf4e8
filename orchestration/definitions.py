"""The Dagster code location; domains add their assets here as they are built."""

from __future__ import annotations

import dagster as dg

defs = dg.Definitions(assets=[])
