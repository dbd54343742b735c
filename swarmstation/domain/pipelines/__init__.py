"""Pipelines: graphs of tool steps with typed ports (spec, validate), and the pure policy that
runs them (engine); `states` holds the run and step lifecycles."""
