"""Hone's language server: inline completions, completions and rewrite/fill commands over LSP."""

__version__ = "0.1.0"
