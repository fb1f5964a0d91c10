"""The API documents itself (issue 25, point 6): every exported function shows its real
signature and a docstring that names each of its arguments, so help(dnnlab.fit) says what the
README promises; the lazy package exports exactly its __all__."""

import inspect

import pytest

import dnnlab

FUNCTIONS = [n for n in dnnlab.__all__ if inspect.isfunction(getattr(dnnlab, n))]


def test_the_exports_load_lazily_and_completely():
    assert set(dnnlab.__all__) <= set(dir(dnnlab))
    assert len(FUNCTIONS) > 20 and "fit" in FUNCTIONS and "load_model" in FUNCTIONS
    with pytest.raises(AttributeError, match="no attribute 'fitt'"):
        dnnlab.fitt  # noqa: B018


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_exported_function_names_each_argument_in_its_docstring(name):
    fn = getattr(dnnlab, name)
    doc = inspect.getdoc(fn) or ""
    params = [p for p, v in inspect.signature(fn).parameters.items()
              if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    assert doc.count("\n") >= 1, f"{name}: a one-line docstring"
    missing = [p for p in params if p not in doc]
    assert not missing, f"dnnlab.{name} does not document {missing}"
    assert "same arguments" not in doc
