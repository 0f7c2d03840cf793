"""Tracing: perf-event and tracing links (``attach``), uprobe targets' ELF symbols
(``elfsyms``), kernel functions (``ksyms``)."""
