"""Search over reasoning steps: the domain (states, steps) apart from the algorithm (MCTS, sampling)."""
