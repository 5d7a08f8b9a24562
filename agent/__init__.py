"""The loop: LM backends, MCTS, analyst, episode runner, daemon, CLI and console."""
