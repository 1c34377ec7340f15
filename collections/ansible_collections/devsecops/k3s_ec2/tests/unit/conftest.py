"""Make the collection importable as ``ansible_collections.devsecops.k3s_ec2``."""

from __future__ import annotations

import sys
from pathlib import Path

COLLECTIONS_ROOT = Path(__file__).resolve().parents[5]
if str(COLLECTIONS_ROOT) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_ROOT))
