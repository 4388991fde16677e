"""Sheaf: document ingestion that never loses a document and never processes one twice."""

__version__ = "0.1.0"
