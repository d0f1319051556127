import sys

from ladd.paths import REPO_ROOT

# The result scripts are run as files (`python scripts/x.py`) and import their siblings by name.
sys.path.insert(0, str(REPO_ROOT / "scripts"))
