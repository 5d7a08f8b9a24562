"""Learning from episodes: contrast pairs, the analyst, the CORE loop."""
