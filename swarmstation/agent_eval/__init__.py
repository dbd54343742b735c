"""The chat agent's labelled set (``set.jsonl``) and its evaluation (``swarmstation eval-agent``)."""
