"""docs/faults.md and the README's fault matrix are what tests/render_docs.py writes."""
from __future__ import annotations

from render_docs import DOC, README, README_END, README_START, render_doc, render_readme


def test_docs_faults_md_is_up_to_date():
    assert DOC.exists() and DOC.read_text() == render_doc(), \
        "docs/faults.md is stale: run `python tests/render_docs.py`"


def test_the_readme_matrix_is_up_to_date():
    readme = README.read_text()
    assert README_START in readme and README_END in readme
    assert readme == render_readme(readme), "the README's fault matrix is stale: run `python tests/render_docs.py`"
