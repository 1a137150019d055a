"""The examples in the optimizer docstrings run and print what they say."""

from __future__ import annotations

import doctest

import pytest

from jaxopt_lab.optim import alias, clipping, schedules


@pytest.mark.parametrize('module', [alias, clipping, schedules],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0
