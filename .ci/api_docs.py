"""Build the API reference with pdoc and fail on a broken docstring reference.

    python .ci/api_docs.py [OUT_DIR]     (default: build/api; open OUT_DIR/mmssl.html)

pdoc renders every public module of mmssl from its docstrings; warnings (a module that fails to import, an
annotation pdoc cannot read) are errors here. pdoc leaves an unresolvable cross-reference as plain text, so
this script also resolves every Sphinx-style reference (:func:`x`, :class:`x`, :mod:`x`, :data:`x`,
:meth:`x`) in the documented docstrings and fails, naming the module and the reference, when one names
nothing.
"""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from pathlib import Path

ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|obj):`~?([A-Za-z_][\w.]*)`")


def resolve(name: str, module) -> bool:
    """True when ``name`` is an attribute path from ``module``, from ``mmssl`` or an importable module."""
    for base in (module.__name__, "mmssl", ""):
        full = f"{base}.{name}" if base else name
        parts = full.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return True
    return False


def main(out: Path) -> int:
    import pdoc
    import pdoc.doc

    warnings.simplefilter("error")  # pdoc's own warnings are failures
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="The module specification")  # a package's submodules listed again
    pdoc.render.configure(docformat="restructuredtext", footer_text="mmssl API reference")
    import pkgutil

    import mmssl

    # every module by name: pdoc alone would follow each package's __all__ and skip the submodules it omits
    modules = ["mmssl", *sorted(m.name for m in pkgutil.walk_packages(mmssl.__path__, "mmssl."))]
    pdoc.pdoc(*modules, output_directory=out)
    broken = []
    for html in sorted(out.rglob("*.html")):
        name = ".".join(html.relative_to(out).with_suffix("").parts)
        if not name.startswith("mmssl"):
            continue
        module = importlib.import_module(name)
        doc = pdoc.doc.Module(module)
        # own docstrings only: a class without one would show torch's (nn.Module's references are not ours)
        members = [m.obj for m in doc.flattened_own_members]
        texts = [module.__doc__] + [getattr(o, "__doc__", None) for o in members
                                    if str(getattr(o, "__module__", "") or "").startswith("mmssl")]
        for text in texts:
            broken += [f"{name}: {ref}" for ref in ROLE.findall(text or "") if not resolve(ref, module)]
    if broken:
        print("broken docstring references:\n  " + "\n  ".join(sorted(set(broken))), file=sys.stderr)
        return 1
    print(f"API reference: {len(list(out.rglob('*.html')))} pages in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/api")))
