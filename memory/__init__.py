"""Insights and attempts: records, embedding, FAISS index, SQLite store, retrieval, lifecycle."""
