"""swarmstation: a self-hosted generative-AI platform on an autoscaled pool of rented GPU instances."""

# The one place the version is written: pyproject.toml reads it (tool.setuptools.dynamic), the API
# reports it, and rented instances install exactly this version (providers/bootstrap.py).
__version__ = "0.1.0"
