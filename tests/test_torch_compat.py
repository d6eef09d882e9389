"""torch's internals (``torch._*``, ``torch.ops.aten``, private modules) are used in one place,
``logreg_torch/torch_compat.py``, so that a torch upgrade breaks there or nowhere."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "logreg_torch"


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def internal_uses(source: str) -> list[str]:
    """Dotted names and imports of torch internals in ``source`` (comments and strings aside)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name.startswith(("torch._", "torch.ops.aten")):
                found.append(name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("torch.")
                      and any(p.startswith("_") for p in a.name.split("."))]
    return found


def test_only_torch_compat_uses_torch_internals() -> None:
    offenders = {str(p.relative_to(PACKAGE)): internal_uses(p.read_text())
                 for p in PACKAGE.rglob("*.py") if p.name != "torch_compat.py"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_finds_internals() -> None:
    # Negative control: each kind of use the rule is about is found.
    source = ("import torch\nimport torch._dynamo\nfrom torch.utils._pytree import tree_map\n"
              "torch._assert_async(x)\nop = torch.ops.aten.log_sigmoid_forward.output\n"
              "# torch._C in a comment\ns = 'torch._C in a string'\n"
              "torch.compiler.is_compiling()\n")
    found = set(internal_uses(source))
    assert {"torch._dynamo", "torch.utils._pytree", "torch._assert_async",
            "torch.ops.aten.log_sigmoid_forward.output"} <= found
    assert not any("compiler" in name or "_C" in name for name in found)  # comment, string
    assert (PACKAGE / "torch_compat.py").is_file()
    assert internal_uses((PACKAGE / "torch_compat.py").read_text())
