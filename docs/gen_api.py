"""Write docs/api.md: every public name of rtecs and rtecs_server, and every public member of
their classes, with its signature and its whole docstring.

Regenerate after changing the public API or any docstring, from the repository root::

    .venv/bin/python docs/gen_api.py             # writes docs/api.md
    .venv/bin/python docs/gen_api.py --missing   # also lists, on stdout, what has no docs

``tests/test_docs.py`` checks that docs/api.md is current.

What is listed, per class: its methods and properties (from the class), its fields and
attributes (from the class source: ``x: T = ...`` in the class body, ``self.x: T = ...`` or
``self.x = ...`` in ``__init__``), and for an enum its members with their values. A member's
documentation is, in order: its docstring; for attributes and enum members, a string literal
right after the assignment (an attribute docstring), ``#:`` comment lines right before it, or
a comment at the end of its line. Members inherited from a base class that has no entry of
its own here (a private base) are listed under the class too. A public member without any of
those shows the marker ``*(undocumented)*`` and is in the ``--missing`` list.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
MISSING = "*(undocumented)*"
_PACKAGES = ("rtecs", "rtecs_server")
_DUNDERS_SKIPPED = {"__init__", "__init_subclass__", "__post_init__", "__new__",
                    "__class_getitem__", "__set_name__"}

# ------------------------------------------------------------------------------------ text


class _Raw:
    """An annotation or default shown as written (no quotes, no ForwardRef(...))."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation(ann: Any) -> Any:
    if ann is inspect.Parameter.empty:
        return ann
    if isinstance(ann, str):
        return _Raw(ann)
    if isinstance(ann, typing.ForwardRef):
        return _Raw(ann.__forward_arg__)
    return _Raw(re.sub(r"ForwardRef\('([^']*)'\)", r"\1", inspect.formatannotation(ann)))


def _signature(obj: object, *, drop_first: bool = False, returns: bool = True) -> str:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    params = list(sig.parameters.values())
    if drop_first and params and params[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    params = [p.replace(annotation=_annotation(p.annotation)) for p in params]
    ret = _annotation(sig.return_annotation) if returns else inspect.Signature.empty
    text = str(sig.replace(parameters=params, return_annotation=ret))
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # default values' reprs: no addresses


def _own_doc(obj: object) -> str:
    """A docstring, cleaned; '' if there is none."""
    return inspect.cleandoc(inspect.getdoc(obj) or "")


def _class_doc(cls: type) -> str:
    """The class's own docstring: not a base's, nor one that dataclass/NamedTuple/Enum
    generate from the signature."""
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str) or not doc.strip():
        return ""
    if doc.startswith(f"{cls.__name__}(") or doc in ("An enumeration.",):
        return ""
    return inspect.cleandoc(doc)


# ------------------------------------------------------------------------- source parsing


class _Assigned:
    """An assignment found in source: a field, class attribute, instance attribute, enum
    member or module constant. (No dataclasses in this file: tests load it by path.)"""

    def __init__(self, name: str, annotation: str | None, value: str | None, doc: str,
                 lineno: int) -> None:
        self.name, self.annotation, self.value = name, annotation, value
        self.doc, self.lineno, self.module = doc, lineno, ""


def _comments(source: str) -> dict[int, str]:
    found: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                found[tok.start[0]] = tok.string
    except (tokenize.TokenError, SyntaxError):
        pass
    return found


def _doc_of_assignment(stmt: ast.stmt, following: ast.stmt | None, lines: list[str],
                       comments: dict[int, str]) -> str:
    if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)):
        return inspect.cleandoc(following.value.value)
    before = []
    line = stmt.lineno - 1
    while line >= 1 and lines[line - 1].strip().startswith("#:"):
        before.insert(0, lines[line - 1].strip()[2:].strip())
        line -= 1
    if before:
        return " ".join(before)
    end = stmt.end_lineno or stmt.lineno
    for at in (end, stmt.lineno):
        comment = comments.get(at)
        if comment is not None:
            text = comment.lstrip("#").strip()
            if text and not text.startswith(("type:", "noqa", "pragma")):
                return text
    return ""


def _target_name(stmt: ast.stmt, *, self_name: str | None) -> tuple[str, ast.expr | None] | None:
    """The assigned name (``x`` for ``x = ...``, or for ``self.x = ...`` when ``self_name``
    is given) and the annotation, if the statement assigns exactly one such name."""
    if isinstance(stmt, ast.AnnAssign):
        target, ann = stmt.target, stmt.annotation
    elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target, ann = stmt.targets[0], None
    else:
        return None
    if self_name is None and isinstance(target, ast.Name):
        return target.id, ann
    if (self_name is not None and isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name) and target.value.id == self_name):
        return target.attr, ann
    return None


def _statement_lists(node: ast.AST) -> typing.Iterator[list[ast.stmt]]:
    for sub in ast.walk(node):
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(sub, name, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                yield stmts
        for handler in getattr(sub, "handlers", []) or []:
            yield handler.body


def _assignments(stmts: list[ast.stmt], lines: list[str], comments: dict[int, str],
                 self_name: str | None) -> list[_Assigned]:
    out = []
    for i, stmt in enumerate(stmts):
        found = _target_name(stmt, self_name=self_name)
        if found is None:
            continue
        name, ann = found
        value = getattr(stmt, "value", None)
        following = stmts[i + 1] if i + 1 < len(stmts) else None
        out.append(_Assigned(name, ast.unparse(ann) if ann is not None else None,
                             ast.unparse(value) if value is not None else None,
                             _doc_of_assignment(stmt, following, lines, comments),
                             stmt.lineno))
    return out


class _ClassSource:
    def __init__(self) -> None:
        self.class_level: list[_Assigned] = []
        self.instance: list[_Assigned] = []
        self.order: dict[str, int] = {}  # member name -> line in the class


@functools.cache
def _class_source(cls: type) -> _ClassSource:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return _ClassSource()
    node = tree.body[0]
    if not isinstance(node, ast.ClassDef):
        return _ClassSource()
    lines, comments = source.splitlines(), _comments(source)
    found = _ClassSource()
    found.class_level = _assignments(node.body, lines, comments, self_name=None)
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.order.setdefault(stmt.name, stmt.lineno)
        if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) or not stmt.args.args:
            continue
        self_name = stmt.args.args[0].arg
        in_init = stmt.name in ("__init__", "__post_init__")
        seen = {a.name for a in found.instance}
        for stmts in _statement_lists(stmt):
            for a in _assignments(stmts, lines, comments, self_name=self_name):
                declared = a.annotation is not None or bool(a.doc) or in_init
                if declared and a.name not in seen:
                    found.instance.append(a)
                    seen.add(a.name)
                elif a.doc and a.name in seen:  # documented where it is set later
                    for known in found.instance:
                        if known.name == a.name and not known.doc:
                            known.doc = a.doc
    for a in found.class_level + found.instance:
        found.order.setdefault(a.name, a.lineno)
    return found


@functools.cache
def _module_constants(module_name: str) -> dict[str, _Assigned]:
    module = sys.modules.get(module_name)
    try:
        source = inspect.getsource(module) if module is not None else ""
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    found = _assignments(tree.body, source.splitlines(), _comments(source), self_name=None)
    for a in found:
        a.module = module_name
    return {a.name: a for a in found}


def _constant_source(name: str) -> _Assigned | None:
    """Where a public constant is assigned (not imported), in the packages' modules."""
    candidates = sorted(m for m in sys.modules
                        if m.split(".")[0] in _PACKAGES and sys.modules[m] is not None)
    found = [c[name] for m in candidates if name in (c := _module_constants(m))]
    documented = [a for a in found if a.doc]
    return (documented or found or [None])[0]


# ------------------------------------------------------------------------------ rendering


class _Report:
    def __init__(self) -> None:
        self.missing: list[str] = []


def _entry(heading: str, doc: str, qualname: str, report: _Report,
           where: str | None = None) -> list[str]:
    if not doc:
        report.missing.append(qualname + (f"  (in {where})" if where else ""))
        doc = MISSING
    return [heading, "", doc, ""]


def _public(name: str, member: object) -> bool:
    if not name.startswith("_"):
        return True
    return (name.startswith("__") and name.endswith("__") and name not in _DUNDERS_SKIPPED
            and inspect.isfunction(member) and bool((member.__doc__ or "").strip()))


def _own_classes(cls: type, documented: set[type]) -> list[type]:
    """``cls`` and those of its bases whose members ``cls``'s entry lists: the private ones
    (no entry of their own here) that no documented base already covers."""
    covered: set[type] = set()
    for base in cls.__mro__[1:]:
        if base in documented:
            covered.update(base.__mro__)
    return [cls] + [base for base in cls.__mro__[1:]
                    if base.__module__.split(".")[0] in _PACKAGES
                    and base not in documented and base not in covered]


def _enum_members(cls: type[enum.Enum], report: _Report) -> list[str]:
    by_name = {a.name: a for a in _class_source(cls).class_level}
    lines = []
    for name, member in cls.__members__.items():
        a = by_name.get(name)
        doc = a.doc if a is not None else ""
        if not doc:
            report.missing.append(f"{cls.__module__.split('.')[0]}.{cls.__name__}.{name}"
                                  f"  (in {cls.__module__}.{cls.__qualname__})")
        lines.append(f"- `{name}` = `{member.value!r}`: {doc or MISSING}")
    return [*lines, ""] if lines else []


def _members(cls: type, prefix: str, documented: set[type], report: _Report) -> list[str]:
    entries: list[tuple[int, int, list[str]]] = []  # (class rank, line, lines)
    seen: set[str] = set()
    is_enum = isinstance(cls, enum.EnumMeta)
    members_of = set(cls.__members__) if is_enum else set()  # type: ignore[attr-defined]
    is_record = _is_named_tuple(cls) or hasattr(cls, "__dataclass_fields__")
    for rank, owner in enumerate(_own_classes(cls, documented)):
        src = _class_source(owner)
        via = "" if owner is cls else f" *(from `{owner.__name__}`)*"
        where = f"{owner.__module__}.{owner.__qualname__}"
        qual = f"{prefix}.{cls.__name__}"
        for name, member in vars(owner).items():
            if name in seen or name in members_of or not _public(name, member):
                continue
            if name.startswith("_") and name not in src.order:
                continue  # generated (NamedTuple's __repr__, ...), not written here
            line = src.order.get(name, 10**6)
            if isinstance(member, property):
                kind = "property" if member.fset is not None else "property, read-only"
                ret = _signature(member.fget).partition(" -> ")[2] if member.fget else ""
                head = f"#### `{cls.__name__}.{name}" + (f": {ret}`" if ret else "`")
                lines = _entry(f"{head} *({kind})*{via}", _own_doc(member), f"{qual}.{name}",
                               report, where)
            elif isinstance(member, classmethod | staticmethod) or inspect.isfunction(member):
                func = member.__func__ if isinstance(member, classmethod | staticmethod) else member
                kind = ("classmethod" if isinstance(member, classmethod)
                        else "staticmethod" if isinstance(member, staticmethod) else "")
                sig = _signature(func, drop_first=not isinstance(member, staticmethod))
                label = f" *({kind})*" if kind else ""
                lines = _entry(f"#### `{cls.__name__}.{name}{sig}`{label}{via}",
                               _own_doc(getattr(cls, name, member)), f"{qual}.{name}", report,
                               where)
            elif inspect.isclass(member):
                lines = _entry(f"#### class `{cls.__name__}.{name}`{via}", _class_doc(member),
                               f"{qual}.{name}", report, where)
            elif inspect.ismemberdescriptor(member) and inspect.getdoc(member):   # a slot
                slot_ann = next((a.annotation for a in src.instance + src.class_level
                                 if a.name == name and a.annotation), None)
                head = f"#### `{cls.__name__}.{name}" + (f": {slot_ann}`" if slot_ann else "`")
                lines = _entry(f"{head} *(attribute, read-only)*{via}",
                               inspect.getdoc(member) or "", f"{qual}.{name}", report, where)
            else:
                continue  # fields and attributes come from the source, below
            seen.add(name)
            entries.append((rank, line, lines))
        for a in src.class_level + src.instance:
            if a.name in seen or a.name in members_of or a.name.startswith("_"):
                continue
            if (a.annotation or "").startswith(("ClassVar", "typing.ClassVar")):
                kind = "class attribute"
                ann = (a.annotation or "").partition("[")[2].rpartition("]")[0] or None
            elif type(vars(owner).get(a.name)).__name__ == "Prop":
                kind, ann = "synchronised property", a.annotation
            else:
                ann = a.annotation
                in_class = a in src.class_level
                kind = ("field" if in_class and is_record and owner is cls
                        else "class attribute" if in_class and a.annotation is None
                        else "attribute")
            text = f"#### `{cls.__name__}.{a.name}" + (f": {ann}" if ann else "")
            if a.value is not None and kind != "attribute":
                text += f" = {a.value}"
            seen.add(a.name)
            entries.append((rank, src.order.get(a.name, a.lineno),
                            _entry(f"{text}` *({kind})*{via}", a.doc, f"{qual}.{a.name}",
                                   report, where)))
    entries.sort(key=lambda e: (e[0], e[1]))
    return [line for _, _, lines in entries for line in lines]


def _base_names(cls: type, documented: set[type]) -> list[str]:
    shown: list[str] = []
    for base in cls.__bases__:
        if base is object or base is typing.Generic:
            continue
        if base.__name__ == "Protocol" and base.__module__ == "typing":
            names = ["typing.Protocol"]
        elif _is_named_tuple(cls) and base is tuple:
            names = ["typing.NamedTuple"]
        elif base.__module__.split(".")[0] in _PACKAGES and base not in documented:
            names = _base_names(base, documented)  # a private base: its own bases
        elif base.__module__ == "builtins" or base.__module__.split(".")[0] in _PACKAGES:
            names = [base.__qualname__]
        else:
            names = [f"{base.__module__}.{base.__qualname__}"]
        shown += [n for n in names if n not in shown]
    return shown


def _is_named_tuple(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


def _section(module: ModuleType, documented: set[type], report: _Report) -> list[str]:
    top = module.__name__
    lines = [f"## `{top}`", "", _own_doc(module) or MISSING, ""]
    for name in sorted(module.__all__, key=str.lower):
        obj = getattr(module, name)
        qual = f"{top}.{name}"
        if inspect.isclass(obj):
            is_enum = isinstance(obj, enum.EnumMeta)
            sig = "" if is_enum else _signature(obj, returns=False)
            if sig in ("(*args, **kwargs)", "(...)"):
                sig = ""
            kind = ("enum" if is_enum else "exception" if issubclass(obj, BaseException)
                    else "dataclass" if hasattr(obj, "__dataclass_fields__") else "class")
            lines += _entry(f"### {kind} `{name}{sig}`", _class_doc(obj), qual, report,
                            f"{obj.__module__}.{obj.__qualname__}")
            bases = _base_names(obj, documented)
            if bases:
                lines += ["Bases: " + ", ".join(f"`{b}`" for b in bases), ""]
            if is_enum:
                lines += _enum_members(obj, report)
            lines += _members(obj, top, documented, report)
        elif isinstance(obj, types.GenericAlias | typing._GenericAlias):  # type: ignore[attr-defined]  # noqa: SLF001
            a = _constant_source(name)
            value = a.value if a is not None and a.value else repr(obj)
            lines += _entry(f"### type alias `{name}` = `{value}`", a.doc if a else "", qual,
                            report, a.module if a else None)
        elif callable(obj):
            lines += _entry(f"### `{name}{_signature(obj)}`", _own_doc(obj), qual, report,
                            getattr(obj, "__module__", None))
        else:
            a = _constant_source(name)
            lines += _entry(f"### `{name}` = `{obj!r}`", a.doc if a else "", qual, report,
                            a.module if a else None)
    return lines


def render(report: _Report | None = None) -> str:
    """The text of docs/api.md; ``report.missing`` gets every undocumented public name."""
    import rtecs
    import rtecs_server

    report = report if report is not None else _Report()
    modules = (rtecs, rtecs_server)
    documented = {obj for m in modules for n in m.__all__
                  if inspect.isclass(obj := getattr(m, n))}
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/gen_api.py`; do not edit. "
             f"{MISSING} marks a public name that has no docstring yet.", ""]
    for module in modules:
        lines += _section(module, documented, report)
    return "\n".join(lines).rstrip() + "\n"


def missing() -> list[str]:
    """Every public name or member without documentation, as ``package.Class.member``."""
    report = _Report()
    render(report)
    return report.missing


def main(argv: list[str]) -> int:
    report = _Report()
    (HERE / "api.md").write_text(render(report))
    print(f"wrote {HERE / 'api.md'} ({len(report.missing)} public names undocumented)")
    if "--missing" in argv:
        print("\n".join(report.missing))
    return 0


if __name__ == "__main__":
    sys.path[:0] = [str(HERE.parent), str(HERE.parent / "server")]
    raise SystemExit(main(sys.argv[1:]))
