"""Load every schemathesis module at collection, while one thread runs.

schemathesis is a pytest plugin, so pytest rewrites the asserts of each of its modules as it is
first imported, with ``ast.parse``; schemathesis imports most of them lazily, from inside a
fuzzing test, while the in-process service's thread runs. On CPython 3.11 the ast module keeps
one recursion counter for every thread (python/cpython#106905), and the two threads can trip it:
``SystemError: AST constructor recursion depth mismatch`` (seen twice in CI). Importing the whole
package here (about a second) leaves no module to rewrite once the tests run."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

import schemathesis

for _module in pkgutil.walk_packages(schemathesis.__path__, "schemathesis."):
    # (an optional integration whose package is not installed, allure, cannot be imported)
    with contextlib.suppress(ImportError):
        importlib.import_module(_module.name)
