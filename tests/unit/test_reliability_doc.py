"""docs/reliability.md lists exactly the tests that inject a fault or an attack."""

from __future__ import annotations

import re

from tests.reliability import DOC, HEADER


def test_the_document_matches_the_reliability_tests(request):
    marked = {item.nodeid for item in request.session.items if item.get_closest_marker("reliability")}
    text = DOC.read_text()
    assert text.startswith(HEADER)
    documented = set(re.findall(r"\| `([^`]+)` \|$", text, flags=re.MULTILINE))
    if len(marked) < len(documented):  # a partial run (-k, one module): check what ran
        assert marked <= documented, sorted(marked - documented)
    else:
        assert documented == marked, (sorted(documented - marked), sorted(marked - documented))
