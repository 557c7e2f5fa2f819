"""Baselines the paper compares LM2 with: retrieval (BM25 RAG). RMT lives in ``lm2.models.rmt``."""

from lm2.baselines.rag import BM25Retriever, RAGConfig, Retrieval, make_rag, split_sentences, split_words

__all__ = ["BM25Retriever", "RAGConfig", "Retrieval", "make_rag", "split_sentences", "split_words"]
