"""The parts of the pyclone docs extension, one module per kind of generated content.

See docs/_ext/pyclone_docs.py, which registers them with Sphinx.
"""
