"""insightloop: an online self-improvement agent with insight memory."""

__version__ = "0.1.0"
