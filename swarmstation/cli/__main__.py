"""`python -m swarmstation.cli`, as the local provider and the bootstrap start it."""

from swarmstation.cli import main

main()
