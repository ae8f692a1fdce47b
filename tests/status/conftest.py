import sys
from pathlib import Path

# The lake tests' data builder (tests/lake/lake_data.py) makes the prepared intervals.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lake"))
