"""The scaling study: statistics and fits over run summaries (analysis.py, fits.py), tables
(tables.py, text.py), plots and figures, and the HTML/Markdown report (build.py; its templates in
assets/).

Imports: collector.summary, collector.store (read side: queries, db), collector.config and
collector.errors; nothing imports the report except the CLI.
"""
