"""Tracing attach targets: uprobe targets' ELF symbols (``elfsyms``), kernel functions
(``ksyms``)."""
