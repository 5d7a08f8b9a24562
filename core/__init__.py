"""The shared vocabulary: tasks, rewards, episodes, the LM protocol, budget, config, events, files."""
