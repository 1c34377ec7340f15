"""Stands in for pip's get-pip.py, which ansible-test downloads from a host this
machine cannot reach: ensurepip, then the pip that ansible-test asks for, from PyPI."""

import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip"], stdout=subprocess.DEVNULL)
requested = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", *requested])
