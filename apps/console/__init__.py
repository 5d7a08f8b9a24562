"""The interactive console (`insightloop inspect`)."""
