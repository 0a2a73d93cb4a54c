"""Start JupyterHub with the course hub's configuration (``course-hub start`` runs this in the course environment)."""

import sys
from pathlib import Path

from jupyterhub.app import main

if __name__ == "__main__":
    sys.exit(main(["-f", str(Path(__file__).with_name("jupyterhub_config.py")), *sys.argv[1:]]))
